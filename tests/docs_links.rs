//! The README and `docs/` have no dead ends: every relative link names a file that exists, and
//! every `#anchor` names a heading in its target, as GitHub renders it.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The markdown files a reader starts from.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("docs entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Lines outside fenced code blocks, where links and headings count.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push(line);
        }
    }
    lines
}

/// The anchor GitHub gives a heading: lowercase; letters, digits, spaces, `-` and `_` kept;
/// spaces become `-`; a repeated slug gets `-1`, `-2`, ...
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let title = heading.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 0;
        while seen.contains(&unique) {
            n += 1;
            unique = format!("{slug}-{n}");
        }
        seen.insert(unique);
    }
    seen
}

/// Targets of inline links `[text](target)` in prose.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            // A title after the target ("path "title"") is not part of it.
            let target = after[..end].split_whitespace().next().unwrap_or("");
            targets.push(target.to_string());
            rest = &after[end..];
        }
    }
    targets
}

#[test]
fn relative_links_and_anchors_in_readme_and_docs_resolve() {
    let mut dead = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = fs::read_to_string(&doc).expect("read markdown");
        for target in link_targets(&text) {
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().expect("parent").join(path)
            };
            if !file.exists() {
                dead.push(format!("{}: {target}: no such file", doc.display()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let target_text = fs::read_to_string(&file).unwrap_or_default();
            if !anchors(&target_text).contains(anchor) {
                dead.push(format!("{}: {target}: no such heading", doc.display()));
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
    assert!(
        checked > 0,
        "no relative links found: is the parser broken?"
    );
}

#[test]
fn slugs_follow_github_rules() {
    let text = "# Edge-triggered readiness\n## `WouldBlock` and `EINTR`\n# Same\n# Same\n```\n# not a heading\n```\n";
    let got = anchors(text);
    for slug in [
        "edge-triggered-readiness",
        "wouldblock-and-eintr",
        "same",
        "same-1",
    ] {
        assert!(got.contains(slug), "{slug} missing from {got:?}");
    }
    assert!(!got.contains("not-a-heading"));
}
