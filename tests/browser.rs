//! The report in a real browser: headless Chromium opens it from file:// with the network
//! unreachable, and a probe injected into a copy of the page reports how many chart
//! containers hold a live ECharts instance, every error and console.error, and every
//! resource the page requested.
//!
//! Skipped (with a message) when Chromium is not installed, unless STRATA_REQUIRE_BROWSER
//! is set, as `.ci/run` does after installing Debian's `chromium`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn chromium() -> Option<PathBuf> {
    std::env::var_os("STRATA_CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            [
                "/usr/bin/chromium",
                "/usr/bin/chromium-browser",
                "/usr/bin/google-chrome",
            ]
            .map(PathBuf::from),
        )
        .find(|p| p.is_file())
}

/// Chromium, or `None` when it is not installed (the test is then skipped, unless
/// STRATA_REQUIRE_BROWSER says it must run).
fn chromium_or_skip() -> Option<PathBuf> {
    let found = chromium();
    if found.is_none() {
        assert!(
            std::env::var_os("STRATA_REQUIRE_BROWSER").is_none(),
            "STRATA_REQUIRE_BROWSER is set but no Chromium was found"
        );
        eprintln!("skipped: no Chromium (apt-get install chromium, or set STRATA_CHROMIUM)");
    }
    found
}

const PROBE: &str = r#"<script>
window.__probe = { errors: [] };
window.addEventListener("error", function (e) { window.__probe.errors.push("error: " + e.message); });
(function () {
  var ce = console.error;
  console.error = function () { window.__probe.errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); ce.apply(console, arguments); };
})();
window.addEventListener("load", function () {
  setTimeout(function () {
    var els = Array.prototype.slice.call(document.querySelectorAll(".chart"));
    var live = els.filter(function (e) { var c = window.echarts && echarts.getInstanceByDom(e); return c && c.getOption() && c.getOption().series.length > 0; });
    var out = { charts: els.length, live: live.length, errors: window.__probe.errors, extra: window.__probe.extra,
      resources: performance.getEntriesByType("resource").map(function (r) { return r.name; }) };
    var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 1000);
});
</script>"#;

fn run_chromium(bin: &Path, page: &Path, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Nothing resolves: any request the page made would fail and show up.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=15000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium")
}

#[test]
fn report_opens_offline_with_every_chart_live_and_no_errors() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let html = tiny_report(&out);
    let expected_charts = html.matches("class=\"chart\"").count();
    assert!(
        expected_charts >= 7,
        "scatter x2, covariance x2, pairplot, histogram x2"
    );

    check_live(&bin, tmp.path(), &html, expected_charts);

    // A screenshot for people to look at (not asserted on).
    if let Some(dir) = std::env::var_os("STRATA_SCREENSHOT_DIR") {
        let shot = PathBuf::from(dir).join("report.png");
        run_chromium(
            &bin,
            &out.join("index.html"),
            &[
                &format!("--screenshot={}", shot.display()),
                "--window-size=1400,5200",
            ],
        );
    }
}

/// Opens `html` with the probe injected: `expected` chart containers, every one a live
/// ECharts instance, no error, no console error, no request. Returns the probe's report.
fn check_live(bin: &Path, tmp: &Path, html: &str, expected_charts: usize) -> serde_json::Value {
    check_live_with(bin, tmp, html, expected_charts, "", None)
}

/// [`check_live`] with `script` run first on load, the page `width` CSS pixels wide when
/// given; what the script puts in `window.__probe.extra` comes back in the report's
/// `extra`.
fn check_live_with(
    bin: &Path,
    tmp: &Path,
    html: &str,
    expected_charts: usize,
    script: &str,
    width: Option<u32>,
) -> serde_json::Value {
    let probed = tmp.join("probed.html");
    let script =
        format!("<script>window.addEventListener(\"load\", function () {{ {script} }});</script>");
    // The page's own `</body>` is the last one (ECharts' source holds the string too).
    let end = html.rfind("</body>").expect("</body>");
    let html = format!("{}{script}\n{}", &html[..end], &html[end..]);
    std::fs::write(
        &probed,
        html.replacen("<head>", &format!("<head>\n{PROBE}"), 1),
    )
    .unwrap();
    let o = match width {
        None => run_chromium(bin, &probed, &["--dump-dom"]),
        Some(w) => {
            // Headless Chromium's window is at least 500 px wide: a narrower page is an
            // iframe of that width, its probe's report copied out to the host page.
            let host = tmp.join("host.html");
            std::fs::write(&host, format!("<html><body style=\"margin:0\"><iframe id=\"f\" src=\"probed.html\" style=\"width:{w}px;height:4000px;border:0\"></iframe><script>(function poll() {{ var d = document.getElementById(\"f\").contentDocument, p = d && d.getElementById(\"probe\"); if (!p) return setTimeout(poll, 100); var o = document.createElement(\"pre\"); o.id = \"probe\"; o.textContent = p.textContent; document.body.appendChild(o); }})();</script></body></html>")).unwrap();
            let size = format!("--window-size={},4000", w + 40);
            run_chromium(
                bin,
                &host,
                &["--dump-dom", "--allow-file-access-from-files", &size],
            )
        }
    };
    let dom = String::from_utf8_lossy(&o.stdout);
    let start = dom.find("<pre id=\"probe\">").unwrap_or_else(|| {
        panic!(
            "no probe output; stderr:\n{}",
            String::from_utf8_lossy(&o.stderr)
        )
    });
    let json = &dom[start + "<pre id=\"probe\">".len()..];
    let json = &json[..json.find("</pre>").unwrap()];
    let json = json
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    let probe: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(probe["charts"].as_u64().unwrap() as usize, expected_charts);
    assert_eq!(
        probe["live"], probe["charts"],
        "every chart container holds a live ECharts instance: {probe}"
    );
    assert_eq!(
        probe["errors"].as_array().unwrap().len(),
        0,
        "errors on the page: {probe}"
    );
    assert_eq!(
        probe["resources"].as_array().unwrap().len(),
        0,
        "requests left the page: {probe}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    for line in stderr.lines().filter(|l| l.contains("CONSOLE")) {
        assert!(
            !line.to_lowercase().contains("error"),
            "console error: {line}"
        );
    }
    probe
}

/// The report of the every-kind spec, and its number of charts.
fn every_kind_page(tmp: &Path) -> (String, usize) {
    let spec = shard_spec(tmp, "");
    let html = report_html(&spec, &tmp.join("report"));
    let charts = html.matches("class=\"chart\"").count();
    assert!(charts >= 22, "every kind's charts: {charts}");
    (html, charts)
}

#[test]
fn every_kind_renders_live() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (html, charts) = every_kind_page(tmp.path());
    check_live(&bin, tmp.path(), &html, charts);
}

/// Draws every chart of the page again with ECharts' SVG renderer, laid out as the page
/// lays it out (the same option, width and layout), and reports each text element's box:
/// its `getBBox()` through its transform to the chart's own pixels, and its font size.
const LAYOUT_PROBE: &str = r#"
  var ctx = document.createElement("canvas").getContext("2d");
  function measure(t, f) { ctx.font = f; return ctx.measureText(t).width; }
  function opacity(n) {
    var o = 1;
    for (; n && n.getAttribute; n = n.parentNode) {
      ["opacity", "fill-opacity"].forEach(function (a) { var v = n.getAttribute(a); if (v !== null) o *= Number(v); });
      var s = getComputedStyle(n);
      if (s.display === "none" || s.visibility === "hidden") return 0;
    }
    return o;
  }
  var out = [];
  document.querySelectorAll(".chart").forEach(function (el) {
    var o = JSON.parse(document.getElementById(el.id + "-option").textContent);
    var w = el.clientWidth, h = strataFit(o, w, Number(el.getAttribute("data-height")), measure);
    o.animation = false;
    var tmp = document.createElement("div");
    tmp.style.cssText = "position:absolute;left:0;top:0;width:" + w + "px;height:" + h + "px";
    document.body.appendChild(tmp);
    var c = echarts.init(tmp, null, { renderer: "svg" });
    c.setOption(o);
    var svg = tmp.querySelector("svg"), root = svg.getScreenCTM().inverse(), texts = [];
    svg.querySelectorAll("text").forEach(function (t) {
      if (!t.textContent.trim() || opacity(t) === 0) return;
      var b = t.getBBox(), m = root.multiply(t.getScreenCTM());
      var p = function (x, y) { var q = new DOMPoint(x, y).matrixTransform(m); return [q.x, q.y]; };
      texts.push({ text: t.textContent, size: parseFloat(getComputedStyle(t).fontSize) * Math.sqrt(Math.abs(m.a * m.d - m.b * m.c)),
        corners: [p(b.x, b.y), p(b.x + b.width, b.y), p(b.x + b.width, b.y + b.height), p(b.x, b.y + b.height)] });
    });
    out.push({ chart: el.id, width: w, height: h, page_height: el.clientHeight, texts: texts });
    c.dispose(); tmp.remove();
  });
  window.__probe.extra = out;
"#;

/// The report's charts keep the figures' layout rules in the browser: at a phone's and a
/// desktop's width, each chart's text as Chromium lays it out lies inside the chart,
/// overlaps no other text and is 9 px or more.
#[test]
fn every_chart_on_the_page_fits_at_phone_and_desktop_widths() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (html, charts) = every_kind_page(tmp.path());
    let mut all = Vec::new();
    for width in [390, 1400] {
        let probe = check_live_with(&bin, tmp.path(), &html, charts, LAYOUT_PROBE, Some(width));
        let drawn = probe["extra"]
            .as_array()
            .expect("the layout probe's report");
        assert_eq!(drawn.len(), charts);
        for c in drawn {
            let name = format!("{width}px/{}", c["chart"].as_str().unwrap());
            let boxes: Vec<common::layout::TextBox> =
                serde_json::from_value(c["texts"].clone()).unwrap();
            assert!(!boxes.is_empty(), "{name}: no text drawn");
            let (w, h) = (c["width"].as_f64().unwrap(), c["height"].as_f64().unwrap());
            assert_eq!(
                c["page_height"].as_f64(),
                Some(h),
                "{name}: the page's chart is the height its layout took"
            );
            assert!(
                w <= width as f64,
                "{name}: the chart is {w} px wide on a page {width} px wide"
            );
            all.extend(common::layout::problems(
                &name, w as f32, h as f32, &boxes, 9.0,
            ));
        }
    }
    assert!(
        all.is_empty(),
        "{} text problems:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn sweep_page_renders_live_and_its_heatmap_switches_statistic() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf");
    cache_revisions(
        &home,
        "mock/gpt2",
        &[
            ("r1", &fixture("tiny-gpt2")),
            ("r2", &fixture("tiny-gpt2-variant")),
        ],
    );
    let spec = tmp.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "name: s\nmodel: {id: mock/gpt2}\ntexts: [{id: a, text: \"One text, some tokens.\"}]\nanalyses: [{kind: summary}, {kind: norms}]\n",
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let o = strata()
        .env("HF_HOME", &home)
        .arg("sweep")
        .arg(&spec)
        .args(["--revisions", "r1,r2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let charts = html.matches("class=\"chart\"").count();
    assert_eq!(charts, 7 + 7 + 1, "a chart per statistic, and the heatmap");
    // Choose the last statistic: the heatmap draws it.
    let switch = r##"
      var s = document.getElementById("heatmap-choice");
      s.selectedIndex = s.options.length - 1;
      s.dispatchEvent(new Event("change"));
      var c = echarts.getInstanceByDom(document.querySelector("#heatmap .chart"));
      window.__probe.extra = { title: c.getOption().title[0].text, choices: s.options.length };
    "##;
    let probe = check_live_with(&bin, tmp.path(), &html, charts, switch, None);
    assert_eq!(probe["extra"]["choices"], 14, "{probe}");
    assert_eq!(probe["extra"]["title"], "growth", "{probe}");
}

/// The report drawn by Chromium to a PNG, at a desktop width. docs/screenshot.sh sets
/// STRATA_SCREENSHOT_PAGE (a report's index.html) and STRATA_SCREENSHOT (the PNG to write)
/// to make the README's picture; without them the tiny report is drawn to a temporary
/// file, which must be a PNG of that size.
#[test]
fn the_report_draws_to_a_png() {
    let Some(bin) = chromium_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let page = match std::env::var_os("STRATA_SCREENSHOT_PAGE") {
        Some(p) => std::fs::canonicalize(p).unwrap(),
        None => {
            let out = tmp.path().join("report");
            tiny_report(&out);
            out.join("index.html")
        }
    };
    let png = std::env::var_os("STRATA_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("report.png"));
    let o = run_chromium(
        &bin,
        &page,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1400,900",
            "--hide-scrollbars",
        ],
    );
    let bytes = std::fs::read(&png)
        .unwrap_or_else(|_| panic!("no screenshot: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (1400, 900));
}
