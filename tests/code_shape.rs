//! The shape of the code: no function of `src/` is longer than a reader can hold at once
//! (80 lines), and no file of `src/` imports from a file that imports it back, directly or
//! through others. An import is a `use`, a `crate::`, `super::` or `self::`
//! path, or a path through a child module the file declares; each resolves to the file of
//! the longest module prefix it names. Test modules (`#[cfg(test)]` to the end of a file)
//! are left out: they may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["model", "gguf"]`) -> file.
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).unwrap().with_extension("");
                let mut parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                out.insert(parts, p);
            }
        }
    }
    out
}

/// The code of a file without comments, strings' contents aside, and without its tests.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path of a `use` tree: `a::{b, c::{d, e}}` -> `a::b`, `a::c::d`, `a::c::e`.
fn use_paths(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut part = String::new();
    let mut parts = Vec::new();
    for ch in tree.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut part));
                continue;
            }
            _ => {}
        }
        part.push(ch);
    }
    parts.push(part);
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        if let Some(open) = p.find('{') {
            let head = p[..open].trim_end_matches("::");
            let inner = &p[open + 1..p.rfind('}').unwrap()];
            use_paths(inner, &join(prefix, head), out);
        } else {
            let p = p.split(" as ").next().unwrap().trim();
            out.push(join(prefix, p));
        }
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}::{b}"),
    }
}

/// Every `word::word...` path in the code.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (bytes[i].is_alphabetic() || bytes[i] == '_')
            && (i == 0
                || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':'));
        if !starts {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < bytes.len() && (bytes[j].is_alphanumeric() || bytes[j] == '_' || bytes[j] == ':')
        {
            j += 1;
        }
        let word: String = bytes[i..j].iter().collect();
        if word.contains("::") {
            out.push(word.trim_end_matches(':').to_string());
        }
        i = j;
    }
    out
}

/// The files `module` imports.
fn imports(
    module: &[String],
    file: &Path,
    all: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeSet<Vec<String>> {
    let code = code(file);
    let is_dir = matches!(
        file.file_stem().and_then(|s| s.to_str()),
        Some("mod" | "lib" | "main")
    );
    let children: BTreeSet<String> = if is_dir {
        code.split(';')
            .filter_map(|s| {
                let s = s.trim();
                let s = s
                    .strip_prefix("pub(crate) ")
                    .or(s.strip_prefix("pub "))
                    .unwrap_or(s);
                s.strip_prefix("mod ").map(|m| m.trim().to_string())
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let mut found: Vec<String> = Vec::new();
    // `use` statements: a line that starts one, up to its `;`.
    let mut offset = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim_start();
        let t = t
            .strip_prefix("pub(crate) ")
            .or(t.strip_prefix("pub(super) "))
            .or(t.strip_prefix("pub "))
            .unwrap_or(t);
        if let Some(rest) = t.strip_prefix("use ") {
            let at = offset + (line.len() - rest.len());
            if let Some(end) = code[at..].find(';') {
                use_paths(&code[at..at + end], "", &mut found);
            }
        }
        offset += line.len();
    }
    found.extend(paths(&code));
    let mut out = BTreeSet::new();
    for p in found {
        let parts: Vec<String> = p.split("::").map(str::to_string).collect();
        let full: Vec<String> = match parts[0].as_str() {
            "crate" => parts[1..].to_vec(),
            "super" => {
                let mut base = module.to_vec();
                let mut k = 0;
                while parts.get(k).is_some_and(|s| s == "super") {
                    base.pop();
                    k += 1;
                }
                base.into_iter().chain(parts[k..].iter().cloned()).collect()
            }
            "self" => module.iter().chain(&parts[1..]).cloned().collect(),
            first if children.contains(first) => module.iter().chain(&parts).cloned().collect(),
            _ => continue,
        };
        let target = (0..=full.len())
            .rev()
            .map(|n| full[..n].to_vec())
            .find(|m| all.contains_key(m));
        if let Some(t) = target.filter(|t| t != module) {
            out.insert(t);
        }
    }
    out
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_file_imports_a_file_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = modules(&root);
    assert!(all.len() > 50, "found {} files under src/", all.len());
    let graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = all
        .iter()
        .map(|(m, f)| (m.clone(), imports(m, f, &all)))
        .collect();
    // A cycle exists iff some file reaches itself.
    let mut cycles = Vec::new();
    for start in graph.keys() {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(Vec<String>, Vec<String>)> = graph[start]
            .iter()
            .map(|n| (n.clone(), vec![name(start), name(n)]))
            .collect();
        while let Some((node, trail)) = stack.pop() {
            if &node == start {
                cycles.push(trail.join(" -> "));
                break;
            }
            if !seen.insert(node.clone()) {
                continue;
            }
            for next in graph.get(&node).into_iter().flatten() {
                let mut t = trail.clone();
                t.push(name(next));
                stack.push((next.clone(), t));
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_a_cycle() {
    // Two files that import each other, as the checker reads them.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("a")).unwrap();
    std::fs::write(tmp.path().join("lib.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(
        tmp.path().join("a/mod.rs"),
        "mod x;\nuse crate::b::B;\npub struct A;\nfn f() {\n    x::g()\n}\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("a/x.rs"), "use super::A;\n").unwrap();
    std::fs::write(tmp.path().join("b.rs"), "pub struct B(crate::a::A);\n").unwrap();
    let all = modules(tmp.path());
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let x = vec!["a".to_string(), "x".to_string()];
    assert!(imports(&a, &all[&a], &all).contains(&b));
    assert!(imports(&b, &all[&b], &all).contains(&a));
    assert!(imports(&x, &all[&x], &all).contains(&a));
    assert!(imports(&a, &all[&a], &all).contains(&x));
    assert!(!imports(&b, &all[&b], &all).contains(&x));
}

/// `(file, line, name, lines)` of every function in `src/` longer than `max` lines, from
/// its `fn` line to its closing brace (rustfmt's layout: the brace at the `fn`'s indent).
fn long_functions(root: &Path, max: usize) -> Vec<(PathBuf, usize, String, usize)> {
    let mut out = Vec::new();
    for file in modules(root).values() {
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let indent = line.len() - t.len();
            let t = t
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub ")
                .trim_start_matches("const ")
                .trim_start_matches("unsafe ");
            let Some(rest) = t.strip_prefix("fn ") else {
                continue;
            };
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // The signature ends at `{` (a body) or `;` (a declaration); a body closed on
            // the same line is one line long.
            let Some(head) = lines[i..].iter().position(|l| {
                let l = l.trim_end();
                l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
            }) else {
                continue;
            };
            if !lines[i + head].trim_end().ends_with('{') {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            let body = lines[i..]
                .iter()
                .position(|l| l.starts_with(&close) && l.len() - l.trim_start().len() == indent);
            if let Some(n) = body.map(|n| n + 1).filter(|&n| n > max) {
                out.push((file.clone(), i + 1, name, n));
            }
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let long = long_functions(&root, 80);
    assert!(
        long.is_empty(),
        "split these where the pieces have names of their own:\n{}",
        long.iter()
            .map(|(f, l, n, len)| format!("{}:{l} {n}: {len} lines", f.display()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The measure sees a long function when there is one.
    let tmp = tempfile::tempdir().unwrap();
    let body: String = (0..85).map(|i| format!("    let _x{i} = {i};\n")).collect();
    std::fs::write(
        tmp.path().join("lib.rs"),
        format!("fn long() {{\n{body}}}\n\nfn short() {{}}\n\ntrait T {{\n    fn f(&self)\n        -> u8;\n}}\n"),
    )
    .unwrap();
    let found = long_functions(tmp.path(), 80);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].2.as_str(), found[0].3), ("long", 87));
}

/// Files of `src/` whose parent does not declare them with a plain `mod NAME;` line at
/// the start of a line. rustfmt formats only the modules it finds that way: one declared
/// inside a macro (as a registry once did) is never formatted, and `cargo fmt --check`
/// passes over it in silence.
fn hidden_from_rustfmt(root: &Path) -> Vec<String> {
    let all = modules(root);
    let mut out = Vec::new();
    for (m, file) in &all {
        let Some((last, parent)) = m.split_last() else {
            continue;
        };
        let roots = [root.join("lib.rs"), root.join("main.rs")];
        let parents: Vec<&PathBuf> = match all.get(parent) {
            Some(p) if !parent.is_empty() => vec![p],
            _ => roots.iter().filter(|p| p.exists()).collect(),
        };
        let declared = parents.iter().any(|p| {
            std::fs::read_to_string(p).unwrap().lines().any(|l| {
                let l = l
                    .trim_start_matches("pub(crate) ")
                    .trim_start_matches("pub(super) ")
                    .trim_start_matches("pub ");
                l == format!("mod {last};")
            })
        });
        if !declared {
            out.push(file.display().to_string());
        }
    }
    out
}

#[test]
fn every_file_is_declared_where_rustfmt_sees_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let hidden = hidden_from_rustfmt(&root);
    assert!(
        hidden.is_empty(),
        "declare these with a plain `mod NAME;` line in their parent, not inside a macro:\n{}",
        hidden.join("\n")
    );
    // A module declared inside a macro is seen.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lib.rs"),
        "pub mod a;\nmacro_rules! m {\n    () => {\n        pub mod b;\n    };\n}\nm!();\n",
    )
    .unwrap();
    std::fs::write(tmp.path().join("a.rs"), "").unwrap();
    std::fs::write(tmp.path().join("b.rs"), "").unwrap();
    let found = hidden_from_rustfmt(tmp.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].ends_with("b.rs"), "{found:?}");
}
