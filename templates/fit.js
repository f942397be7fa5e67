// strata's chart layout, shared by the report page (the browser, at each chart's width) and
// `strata figures` (QuickJS, at the printed width). ECharts places text where the option
// says; this places it where it fits, by measuring it with the same measurer ECharts uses:
// titles wrap, legends wrap below the title (or, past eight series, become a colour bar
// over the series order), colour scales sit below the title instead of beside the plot,
// axis names sit at the middle of their axis, away from any legend, tick labels thin out
// and long ones are shortened, and heatmap cells keep a label only where it fits inside
// the cell (the subtitle says when some do not). Every size is fixed here, so all charts
// of a report share one set of text sizes.
var strataFit = (function () {
  "use strict";
  // Pixels. At 108 px per printed inch, 9 px is 6 pt, the smallest text a figure prints.
  var SIZE = { title: 13, sub: 11, name: 11, tick: 10, legend: 10, cell: 9 };
  var LINE = { title: 16, sub: 14, name: 14, tick: 13, legend: 13, cell: 11 };
  var PAD = 6;
  // Longest tick label, in pixels, before it is shortened.
  var MAX_TICK = 96;
  var MAX_LEGEND = 8;

  function list(x) {
    return x == null ? [] : Array.isArray(x) ? x : [x];
  }

  function Measure(raw, family) {
    this.width = function (text, px, bold) {
      return raw(String(text), (bold ? "bold " : "") + px + "px " + family);
    };
  }

  // `s` shortened with "..." to at most `width` pixels.
  function shorten(s, width, px, m, bold) {
    s = String(s);
    if (m.width(s, px, bold) <= width) return s;
    var chars = Array.from(s);
    while (chars.length > 1 && m.width(chars.join("") + "...", px, bold) > width) chars.pop();
    return chars.join("") + "...";
  }

  // Greedy word wrap to `width` pixels; a word longer than a line is shortened.
  function wrap(text, width, px, m, bold) {
    var out = [];
    String(text || "").split("\n").forEach(function (para) {
      var line = "";
      para.split(" ").forEach(function (word) {
        var next = line ? line + " " + word : word;
        if (line && m.width(next, px, bold) > width) {
          out.push(line);
          line = word;
        } else {
          line = next;
        }
      });
      out.push(line);
    });
    return out
      .filter(function (l) { return l !== ""; })
      .map(function (l) { return shorten(l, width, px, m, bold); });
  }

  // Title and subtitle, wrapped to the width; returns the height they take.
  function title(o, W, m) {
    var t = list(o.title)[0];
    if (!t || (!t.text && !t.subtext)) return PAD;
    var avail = W - 2 * PAD - 4;
    var main = wrap(t.text, avail, SIZE.title, m, true);
    var sub = wrap(t.subtext, avail, SIZE.sub, m, false);
    t.text = main.join("\n");
    t.subtext = sub.join("\n");
    t.left = "center";
    t.top = 0;
    t.padding = [PAD, PAD, 0, PAD];
    t.itemGap = 3;
    t.textStyle = Object.assign({}, t.textStyle, { fontSize: SIZE.title, lineHeight: LINE.title, fontWeight: "bold" });
    t.subtextStyle = Object.assign({}, t.subtextStyle, { fontSize: SIZE.sub, lineHeight: LINE.sub });
    o.title = [t];
    return PAD + main.length * LINE.title + (sub.length ? 3 + sub.length * LINE.sub : 0);
  }

  function seriesColour(s) {
    return (s.lineStyle && s.lineStyle.color) || (s.itemStyle && s.itemStyle.color) || null;
  }

  // Past eight series, a legend becomes a colour bar from the first series' colour to the
  // last one's (the series are hidden states in model order, coloured along a ramp).
  function gradient(o, W, top, m, names) {
    var colours = [];
    (o.series || []).forEach(function (s) {
      var c = seriesColour(s);
      if (c && colours[colours.length - 1] !== c) colours.push(c);
    });
    if (colours.length < 2) return null;
    var first = function (n) { return String(n).split(" ")[0]; };
    var low = shorten(first(names[0]), W / 4, SIZE.legend, m);
    var high = shorten(first(names[names.length - 1]), W / 4, SIZE.legend, m);
    var room = W - 2 * PAD - m.width(low, SIZE.legend) - m.width(high, SIZE.legend) - 24;
    delete o.legend;
    o.visualMap = list(o.visualMap).concat([{
      type: "continuous", show: true, orient: "horizontal", left: "center", top: top,
      min: 0, max: colours.length - 1, calculable: false, hoverLink: false, seriesIndex: [],
      itemWidth: 10, itemHeight: Math.max(40, Math.min(200, room)), text: [high, low], textGap: 6,
      padding: 0, inRange: { color: colours },
      textStyle: { fontSize: SIZE.legend, lineHeight: LINE.legend }
    }]);
    return LINE.legend + 6;
  }

  // The legend, wrapped into rows by measurement below the title; returns its height.
  function legend(o, W, top, m) {
    var l = list(o.legend)[0];
    if (!l) return 0;
    var names = l.data
      ? l.data.map(function (d) { return d && d.name != null ? d.name : d; })
      : (o.series || []).map(function (s) { return s.name; }).filter(function (n) { return n != null; });
    if (names.length > MAX_LEGEND) {
      var h = gradient(o, W, top, m, names);
      if (h != null) return h;
    }
    var avail = W - 2 * PAD - 10;
    var iconW = 18, gap = 10, rows = [[]], x = 0;
    var data = names.map(function (n) {
      var shown = shorten(n, avail - iconW - 5, SIZE.legend, m);
      var w = iconW + 5 + m.width(shown, SIZE.legend);
      if (x > 0 && x + w > avail) {
        rows.push([]);
        x = 0;
      }
      rows[rows.length - 1].push(n);
      x += w + gap;
      return { name: n, shown: shown };
    });
    var labels = {};
    data.forEach(function (d) { labels[d.name] = d.shown; });
    // Rows are broken here, where they were measured; an empty name is a line break.
    var withBreaks = [];
    rows.forEach(function (r, i) {
      if (i > 0) withBreaks.push("");
      withBreaks.push.apply(withBreaks, r);
    });
    l.data = withBreaks;
    l.type = "plain";
    l.orient = "horizontal";
    l.left = "center";
    l.top = top;
    l.width = W - 2 * PAD;
    l.padding = [2, 5];
    l.itemGap = gap;
    l.itemWidth = iconW;
    l.itemHeight = 9;
    l.formatter = function (n) { return labels[n] != null ? labels[n] : n; };
    l.textStyle = Object.assign({}, l.textStyle, { fontSize: SIZE.legend, lineHeight: LINE.legend });
    o.legend = [l];
    return rows.length * LINE.legend + (rows.length - 1) * gap + 4 + 4;
  }

  function fmt(v) {
    if (typeof v !== "number") return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(Math.round(v * 1e4) / 1e4);
  }

  // A colour scale beside the plot takes a column the narrow figure has not got: it goes
  // below the title, horizontal, its two ends labelled. Returns its height.
  function colourScales(o, W, top, m) {
    var h = 0;
    list(o.visualMap).forEach(function (v) {
      if (v.seriesIndex && v.seriesIndex.length === 0) return;
      var hi = v.text ? v.text[0] : fmt(v.max), lo = v.text ? v.text[1] : fmt(v.min);
      var room = W - 2 * PAD - m.width(hi, SIZE.legend) - m.width(lo, SIZE.legend) - 24;
      Object.assign(v, {
        orient: "horizontal", left: "center", top: top + h, right: null, bottom: null,
        calculable: false, itemWidth: 10, itemHeight: Math.max(40, Math.min(200, room)),
        text: [hi, lo], textGap: 6, padding: 0,
        textStyle: { fontSize: SIZE.legend, lineHeight: LINE.legend }
      });
      h += LINE.legend + 6;
    });
    return h;
  }

  function axisLabels(axis) {
    return axis.type === "category" && axis.data
      ? axis.data.map(function (d) { return d && d.value != null ? d.value : d; })
      : null;
  }

  // The values series draw along value axis `index` of the x (`dim` 0) or y (1) axes.
  function axisValues(o, dim, index) {
    var out = [];
    var key = dim === 0 ? "xAxisIndex" : "yAxisIndex";
    (o.series || []).forEach(function (s) {
      if ((s[key] || 0) !== index || s.type === "heatmap") return;
      (s.data || []).forEach(function (d) {
        var v = d && typeof d === "object" && !Array.isArray(d) ? d.value : d;
        v = Array.isArray(v) ? v[dim] : dim === 1 ? v : null;
        if (typeof v === "number" && isFinite(v)) out.push(v);
      });
    });
    return out;
  }

  // A value axis's widest tick label, from the range of the values it shows and the
  // step ECharts' nice ticks would take (thousands grouped, as ECharts writes them).
  function valueTickWidth(values, log, scale, m) {
    // Without `scale`, ECharts starts a value axis at zero.
    var lo = scale || log ? Infinity : 0, hi = scale || log ? -Infinity : 0;
    values.forEach(function (v) {
      if (log && v <= 0) return;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    });
    if (!(lo <= hi)) lo = hi = 1;
    if (log) {
      lo = Math.max(lo, 1e-300);
      hi = Math.max(hi, lo);
      var ends = [Math.pow(10, Math.floor(Math.log10(lo))), Math.pow(10, Math.ceil(Math.log10(hi)))];
      return Math.max.apply(null, ends.map(function (v) { return m.width(group(v), SIZE.tick); }));
    }
    // ECharts' steps are 1, 2, 3 or 5 times the power of ten of a fifth of the range: its
    // labels have that power's decimals at most (kept here as trailing zeros: a margin).
    var digits = Math.max(0, -Math.floor(Math.log10(Math.max((hi - lo) / 5, 1e-12))));
    var cands = [lo, hi].map(function (v) { return group(v.toFixed(Math.min(12, digits))); });
    return Math.max.apply(null, cands.map(function (t) { return m.width(t, SIZE.tick); }));
  }

  function group(v) {
    var t = String(v);
    if (Math.abs(Number(v)) < 1000 || /e/.test(t)) return t;
    var parts = t.split(".");
    parts[0] = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return parts.join(".");
  }

  // Sizes, thinning and shortening of one axis's ticks and name; returns the room its
  // labels take across the axis (the label width for a y axis, height for an x axis).
  function axis(a, isX, m, values) {
    var rotate = (a.axisLabel && a.axisLabel.rotate) || 0;
    var labels = axisLabels(a);
    var widest = values && values.length
      ? valueTickWidth(values, a.type === "log", a.scale, m)
      : m.width("-0.0000", SIZE.tick);
    if (labels) {
      var short = {};
      widest = 0;
      labels.forEach(function (s) {
        var t = shorten(s, MAX_TICK, SIZE.tick, m);
        short[s] = t;
        widest = Math.max(widest, m.width(t, SIZE.tick));
      });
      a.axisLabel = Object.assign({}, a.axisLabel, {
        formatter: function (s) { return short[s] != null ? short[s] : s; }
      });
    }
    a.axisLabel = Object.assign({}, a.axisLabel, {
      fontSize: SIZE.tick, lineHeight: LINE.tick, hideOverlap: true, margin: 6
    });
    a.nameTextStyle = Object.assign({}, a.nameTextStyle, { fontSize: SIZE.name, lineHeight: LINE.name });
    var r = Math.abs(rotate) * Math.PI / 180;
    var across = isX
      ? widest * Math.sin(r) + LINE.tick * Math.cos(r)
      : widest * Math.cos(r) + LINE.tick * Math.sin(r);
    if (a.name) {
      a.nameLocation = "middle";
      a.nameGap = Math.ceil(6 + across + 6 + (isX ? 0 : LINE.name / 2));
      if (!isX) a.nameRotate = 90;
    }
    return across;
  }

  // Axis names wrap (x, to two lines) or shorten to the length of their axis.
  function names(o, W, mg, plotH, m) {
    var mid = mg.left + (W - mg.left - mg.right) / 2;
    var along = 2 * Math.min(mid - PAD, W - PAD - mid);
    var lines = 1;
    list(o.xAxis).forEach(function (a) {
      if (!a.name) return;
      var w = wrap(a.name, along, SIZE.name, m);
      if (w.length > 2) w = [w[0], shorten(w.slice(1).join(" "), along, SIZE.name, m)];
      a.name = w.join("\n");
      lines = Math.max(lines, w.length);
    });
    list(o.yAxis).forEach(function (a) {
      if (a.name) a.name = shorten(a.name, plotH, SIZE.name, m);
    });
    return (lines - 1) * LINE.name;
  }

  // One cartesian grid laid out by measurement: the room its axis labels and names take.
  function margins(o, m) {
    var xs = list(o.xAxis), ys = list(o.yAxis);
    var out = { left: PAD, right: PAD + 4, bottom: PAD };
    xs.forEach(function (a, i) {
      var h = axis(a, true, m, axisValues(o, 0, i));
      out.bottom = Math.max(out.bottom, PAD + 6 + h + (a.name ? 6 + LINE.name : 0));
    });
    ys.forEach(function (a, i) {
      var w = axis(a, false, m, axisValues(o, 1, i));
      var need = PAD + 6 + w + (a.name ? 6 + LINE.name : 0);
      if (a.position === "right" || i > 0) out.right = Math.max(out.right, need);
      else out.left = Math.max(out.left, need);
    });
    o.xAxis = xs;
    o.yAxis = ys;
    return out;
  }

  // Heatmap cells keep their label only where it fits inside the cell at the smallest
  // print size (`width` measures a label at that size); returns how many did not.
  function cellLabels(o, plotW, plotH, width) {
    var xs = list(o.xAxis), ys = list(o.yAxis), hidden = 0;
    (o.series || []).forEach(function (s) {
      if (s.type !== "heatmap" || !s.label || !s.label.show) return;
      var cols = axisLabels(xs[0] || {}), rows = axisLabels(ys[0] || {});
      if (!cols || !rows) return;
      var cw = plotW / cols.length, ch = plotH / rows.length;
      s.label = Object.assign({}, s.label, { fontSize: SIZE.cell, lineHeight: LINE.cell });
      s.data = (s.data || []).map(function (d) {
        var text = d && d.name != null ? d.name : Array.isArray(d) ? fmt(d[2]) : fmt(d.value[2]);
        var fits = ch >= LINE.cell + 1 && width(text) <= cw - 3;
        if (fits) return d;
        hidden++;
        var item = Array.isArray(d) ? { value: d } : Object.assign({}, d);
        item.label = { show: false };
        return item;
      });
    });
    return hidden;
  }

  function isPercent(v) {
    return typeof v === "string" && v.charAt(v.length - 1) === "%";
  }

  // Lays out option `o` for a chart `W` pixels wide whose option was made for a chart `H`
  // pixels high, its plot drawn `scale` times as high as the option made it (figures keep
  // the report's shape at their width); returns the height the chart needs (its header
  // and axes take what they measure, the plot at least four tenths of the width).
  function fit(o, W, H, measureText, scale) {
    scale = scale || 1;
    var family = (o.textStyle && o.textStyle.fontFamily) || "sans-serif";
    var m = new Measure(measureText, family);
    var grids = list(o.grid);
    var single = grids.length <= 1 && !(grids[0] && isPercent(grids[0].top));
    var g = grids[0] || {};
    var oldTop = typeof g.top === "number" ? g.top : 60;
    var oldBottom = typeof g.bottom === "number" ? g.bottom : 60;
    var plotH = Math.max(Math.max(60, H - oldTop - oldBottom) * scale, 0.4 * W);
    var sub0 = list(o.title)[0] ? list(o.title)[0].subtext || "" : "";
    var layout = function () {
      var top = title(o, W, m);
      top += legend(o, W, top + 2, m);
      top += colourScales(o, W, top + 4, m) + 4;
      return top;
    };
    if (!single) {
      // Small multiples place their own panels; only the text is sized here.
      var top = layout();
      // Labels at a panel's ends would meet its neighbour's: only inner ticks are labelled.
      var inner = function (a) {
        a.axisLabel = Object.assign({}, a.axisLabel, { showMinLabel: false, showMaxLabel: false });
      };
      list(o.xAxis).forEach(function (a) { axis(a, true, m); inner(a); });
      list(o.yAxis).forEach(function (a) { axis(a, false, m); inner(a); });
      grids.forEach(function (gr) { if (typeof gr.top === "number") gr.top += Math.max(0, top - oldTop); });
      return Math.round(H * scale) + (grids.some(function (gr) { return typeof gr.top === "number"; }) ? Math.max(0, top - oldTop) : 0);
    }
    var mg = margins(o, m);
    mg.bottom += names(o, W, mg, plotH, m);
    var plotW = W - mg.left - mg.right;
    var hidden = cellLabels(o, plotW, plotH, function (t) { return m.width(t, SIZE.cell); });
    if (hidden > 0) {
      var t = list(o.title)[0] || {};
      var note = hidden === countLabels(o) ? "cell labels too small to print at this width: read the colour scale"
        : "cells too small for their label show the colour only";
      t.subtext = sub0 ? sub0 + "; " + note : note;
      o.title = [t];
    }
    var top2 = Math.ceil(layout() + 6);
    o.grid = [Object.assign(g, {
      top: top2, bottom: Math.ceil(mg.bottom), left: Math.ceil(mg.left), right: Math.ceil(mg.right),
      outerBounds: { left: 1, right: 1, top: Math.max(0, top2 - 8), bottom: 1 }
    })];
    return Math.ceil(top2 + plotH + mg.bottom);
  }

  function countLabels(o) {
    return (o.series || []).reduce(function (n, s) {
      return n + (s.type === "heatmap" && s.label && s.label.show ? (s.data || []).length : 0);
    }, 0);
  }

  return fit;
})();
