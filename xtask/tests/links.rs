//! The docs are a small book of pages that link to each other and to the repository's files;
//! moving a section breaks links silently. This test checks every relative link and `#anchor`
//! in the front page, the changelog and `docs/**/*.md`: the target exists, and an anchor names a
//! heading of the target page (by GitHub's slug). Markdown is read with `pulldown-cmark`, so
//! links in code blocks are not links and reference-style links are.

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path, PathBuf};

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// One Markdown page: the links it makes and the anchors its headings define.
struct Page {
    links: Vec<String>,
    anchors: HashSet<String>,
}

fn read_page(path: &Path) -> Result<Page, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut links = Vec::new();
    let mut anchors = HashSet::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(&text, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                links.push(dest_url.to_string());
            }
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = heading.as_mut() {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let slug = slug(&heading.take().unwrap_or_default());
                // GitHub numbers repeated headings: `x`, `x-1`, `x-2`...
                let count = seen.entry(slug.clone()).or_insert(0);
                anchors.insert(match *count {
                    0 => slug,
                    n => format!("{slug}-{n}"),
                });
                *count += 1;
            }
            _ => {}
        }
    }
    Ok(Page { links, anchors })
}

/// GitHub's anchor for a heading's text: lower case, spaces to hyphens, and every character
/// that is not a letter, a digit, `-` or `_` dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `a/b/../c` to `a/c`, without touching the file system (the target may not exist).
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every broken relative link or anchor in `files` (paths relative to `root`), one message each.
/// External links (`https:`, `mailto:`...) are not checked; an anchor is checked only on a
/// Markdown target.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut pages: BTreeMap<PathBuf, Result<Page, String>> = BTreeMap::new();
    let mut broken = Vec::new();
    for file in files {
        let page = match read_page(&root.join(file)) {
            Ok(page) => page,
            Err(e) => {
                broken.push(e);
                continue;
            }
        };
        for link in &page.links {
            let is_external = link.starts_with("//")
                || link
                    .split_once(':')
                    .is_some_and(|(scheme, _)| !scheme.contains('/'));
            if is_external {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                normalise(&file.parent().unwrap_or(Path::new("")).join(path))
            };
            if !root.join(&target).exists() {
                broken.push(format!(
                    "{}: link `{link}`: {} does not exist",
                    file.display(),
                    target.display()
                ));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if target.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            let anchors = pages
                .entry(target.clone())
                .or_insert_with(|| read_page(&root.join(&target)));
            match anchors {
                Ok(target_page) if target_page.anchors.contains(anchor) => {}
                Ok(_) => broken.push(format!(
                    "{}: link `{link}`: {} has no heading with the anchor `#{anchor}`",
                    file.display(),
                    target.display()
                )),
                Err(e) => broken.push(e.clone()),
            }
        }
    }
    broken
}

/// `dir`'s Markdown files, at any depth, relative to `root`.
fn markdown_under(root: &Path, dir: &Path, into: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(dir))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name())
        .collect();
    entries.sort();
    for name in entries {
        let path = dir.join(name);
        if root.join(&path).is_dir() {
            markdown_under(root, &path, into);
        } else if path.extension().is_some_and(|ext| ext == "md") {
            into.push(path);
        }
    }
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let root = xtask::root();
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    markdown_under(&root, Path::new("docs"), &mut files);
    assert!(files.len() > 10, "the book's pages were found: {files:?}");
    let broken = broken_links(&root, &files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_reports_a_planted_broken_link_and_a_planted_broken_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir(root.join("docs")).unwrap();
    std::fs::write(
        root.join("README.md"),
        "# Front\n\n[good](docs/page.md#a-heading-with-code) [self](#front) \
         [repeated](docs/page.md#twice-1) [web](https://example.com/x.md)\n\n\
         [gone](docs/missing.md)\n\n[wrong anchor](docs/page.md#nowhere)\n\n\
         ```\n[in code](docs/not-a-link.md)\n```\n",
    )
    .unwrap();
    std::fs::write(
        root.join("docs/page.md"),
        "# Page\n\n## A heading, with `code`\n\n## Twice\n\n## Twice\n\n[back](../README.md#front)\n",
    )
    .unwrap();
    let files = [PathBuf::from("README.md"), PathBuf::from("docs/page.md")];
    let broken = broken_links(root, &files);
    assert_eq!(
        broken,
        [
            "README.md: link `docs/missing.md`: docs/missing.md does not exist",
            "README.md: link `docs/page.md#nowhere`: docs/page.md has no heading with the anchor `#nowhere`",
        ],
        "exactly the planted link and anchor are reported"
    );
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug("`[state]`: the durable store and the compiled cache"),
        "state-the-durable-store-and-the-compiled-cache"
    );
    assert_eq!(
        slug("Walkthrough: real providers"),
        "walkthrough-real-providers"
    );
    assert_eq!(
        slug("`[backends.NAME]`: a configured use"),
        "backendsname-a-configured-use"
    );
}
