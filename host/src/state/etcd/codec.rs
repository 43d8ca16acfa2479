//! The etcd store's key codec: where each record lives under the prefix, and the escaping
//! that keeps etcd's byte order of keys the order of the ID tuples.
//!
//! Names are escaped so that byte order of keys is tuple order: a NUL inside a
//! name becomes `\0\xFF` and a name ends with a lone `\0`. UTF-8 never holds `\xFF`, so the end
//! of a name (`\0` then the next name, whose bytes are below `\xFF`) sorts before a NUL inside
//! it (`\0\xFF`), just as the shorter of two names with the same start sorts first.

/// The keys of one store: every one under its prefix.
pub struct Layout {
    /// `{prefix}/`
    root: Vec<u8>,
    /// `{prefix}/kv/`
    kv: Vec<u8>,
    /// `{prefix}/owners/`
    owners: Vec<u8>,
    /// `{prefix}/swaps/`
    swaps: Vec<u8>,
}

impl Layout {
    pub fn new(prefix: &str) -> Layout {
        let mut root = prefix.trim_end_matches('/').as_bytes().to_vec();
        root.push(b'/');
        let join = |part: &str| [root.as_slice(), part.as_bytes()].concat();
        Layout {
            kv: join("kv/"),
            owners: join("owners/"),
            swaps: join("swaps/"),
            root,
        }
    }

    pub fn root(&self) -> &[u8] {
        &self.root
    }

    /// The marker of compare-and-swap number `n` of the store named `store`.
    pub fn marker(&self, store: &str, n: u64) -> Vec<u8> {
        [
            self.swaps.as_slice(),
            format!("{store}/{n:016x}").as_bytes(),
        ]
        .concat()
    }

    /// Where the keys of `namespace` start: `{prefix}/kv/{namespace}\0`.
    pub fn kv_namespace(&self, namespace: &str) -> Vec<u8> {
        let mut k = self.kv.clone();
        escape_into(&mut k, namespace);
        k.push(0);
        k
    }

    pub fn kv(&self, namespace: &str, key: &str) -> Vec<u8> {
        // The key is the last part: kept as it is, so a key prefix is a byte prefix.
        [self.kv_namespace(namespace).as_slice(), key.as_bytes()].concat()
    }

    /// The range `[start, end)` of the keys of `namespace` that start with `prefix` and
    /// sort after `after`.
    pub fn kv_page(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> (Vec<u8>, Vec<u8>) {
        let base = self.kv_namespace(namespace);
        let end = prefix_end(&[base.as_slice(), prefix.as_bytes()].concat());
        let start = match after {
            Some(after) if after >= prefix => {
                successor(&[base.as_slice(), after.as_bytes()].concat())
            }
            _ => [base.as_slice(), prefix.as_bytes()].concat(),
        };
        (start, end)
    }

    pub fn kv_end(&self) -> Vec<u8> {
        prefix_end(&self.kv)
    }

    /// The first key of any namespace that sorts after `after` (or of any namespace).
    pub fn namespaces_after(&self, after: Option<&str>) -> Vec<u8> {
        match after {
            Some(after) => self.after_namespace(after.as_bytes()),
            None => self.kv.clone(),
        }
    }

    /// Past every key of `namespace`: `{prefix}/kv/{namespace}\0\xFF`. A key of the
    /// namespace continues `\0` with UTF-8 (never `\xFF`); a longer name that continues
    /// with a NUL is escaped `\0\xFF` and so sorts after, as it should.
    pub fn after_namespace(&self, namespace: &[u8]) -> Vec<u8> {
        let mut k = self.kv.clone();
        escape_bytes_into(&mut k, namespace);
        k.extend_from_slice(&[0, 0xFF]);
        k
    }

    /// The namespace of a plugin data key (unescaped bytes).
    pub fn namespace_of(&self, key: &[u8]) -> Option<Vec<u8>> {
        let rest = key.strip_prefix(self.kv.as_slice())?;
        split_name(rest).map(|(name, _)| name)
    }

    pub fn owner(&self, cluster_id: &str, node_id: &str) -> Vec<u8> {
        let mut k = self.owners.clone();
        escape_into(&mut k, cluster_id);
        k.push(0);
        escape_into(&mut k, node_id);
        k
    }

    pub fn owners_after(&self, after: Option<(&str, &str)>) -> Vec<u8> {
        match after {
            Some((cluster_id, node_id)) => successor(&self.owner(cluster_id, node_id)),
            None => self.owners.clone(),
        }
    }

    pub fn owners_end(&self) -> Vec<u8> {
        prefix_end(&self.owners)
    }

    /// The (unescaped) cluster and node IDs of an ownership key.
    pub fn owner_ids(&self, key: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
        let rest = key.strip_prefix(self.owners.as_slice())?;
        let (cluster_id, rest) = split_name(rest)?;
        let node_id = unescape(rest)?;
        Some((cluster_id, node_id))
    }
}

fn escape_into(out: &mut Vec<u8>, name: &str) {
    escape_bytes_into(out, name.as_bytes())
}

fn escape_bytes_into(out: &mut Vec<u8>, name: &[u8]) {
    for &b in name {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// The unescaped bytes of an escaped name that fills `escaped`.
fn unescape(escaped: &[u8]) -> Option<Vec<u8>> {
    match split_name(escaped) {
        // A lone NUL in the last name: not a key this layout writes.
        Some(_) => None,
        None => {
            let mut out = Vec::with_capacity(escaped.len());
            let mut bytes = escaped.iter();
            while let Some(&b) = bytes.next() {
                out.push(b);
                if b == 0 {
                    bytes.next();
                }
            }
            Some(out)
        }
    }
}

/// Split an escaped, terminated name off the front of `key`: (the name, the rest after its
/// terminating NUL).
fn split_name(key: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let mut name = Vec::new();
    let mut i = 0;
    while i < key.len() {
        match (key[i], key.get(i + 1)) {
            (0, Some(0xFF)) => {
                name.push(0);
                i += 2;
            }
            (0, _) => return Some((name, &key[i + 1..])),
            (b, _) => {
                name.push(b);
                i += 1;
            }
        }
    }
    None
}

/// The smallest key after `key`.
pub fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

/// The smallest key after every key that starts with `prefix` (etcd's range end for a
/// prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xFF: up to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new("/pg/test/")
    }

    #[test]
    fn owner_keys_sort_as_the_id_tuples() {
        let ids = [
            "",
            "\0",
            "\0\0",
            "\0a",
            "a",
            "a\0",
            "a\0\0",
            "a\0b",
            "a\u{1}",
            "a/",
            "ab",
            "b",
            "é",
            "\u{10FFFF}",
        ];
        let l = layout();
        let mut tuples = Vec::new();
        for c in ids {
            for n in ids {
                tuples.push((c, n));
            }
        }
        let mut by_key = tuples.clone();
        by_key.sort_by_key(|(c, n)| l.owner(c, n));
        tuples.sort();
        assert_eq!(by_key, tuples);
        for (c, n) in tuples {
            let (cluster, node) = l.owner_ids(&l.owner(c, n)).unwrap();
            assert_eq!(
                (cluster.as_slice(), node.as_slice()),
                (c.as_bytes(), n.as_bytes())
            );
            // The page after a record starts right after it.
            let next = l.owners_after(Some((c, n)));
            assert!(next > l.owner(c, n));
        }
    }

    #[test]
    fn data_keys_sort_by_namespace_then_key_and_namespaces_skip_whole() {
        let l = layout();
        let names = ["a", "a\0", "a\0b", "ab", "b"];
        let keys = ["", "\0", "k", "k/1", "\u{7F}", "é"];
        let mut pairs = Vec::new();
        for ns in names {
            for k in keys {
                pairs.push((ns, k));
            }
        }
        let mut by_key = pairs.clone();
        by_key.sort_by_key(|(ns, k)| l.kv(ns, k));
        pairs.sort();
        assert_eq!(by_key, pairs);
        for (ns, k) in &pairs {
            let key = l.kv(ns, k);
            assert_eq!(l.namespace_of(&key).unwrap(), ns.as_bytes());
            // Every key of a namespace sorts before the first of the next namespace.
            assert!(key < l.after_namespace(ns.as_bytes()));
            for other in names.iter().filter(|other| *other > ns) {
                assert!(l.kv(other, k) >= l.after_namespace(ns.as_bytes()));
            }
        }
    }

    #[test]
    fn a_page_stays_inside_namespace_and_prefix_and_starts_after_after() {
        let l = layout();
        let (start, end) = l.kv_page("ns", "m/", None);
        for inside in ["m/", "m/1", "m/\u{10FFFF}"] {
            let k = l.kv("ns", inside);
            assert!(start <= k && k < end, "{inside:?}");
        }
        for outside in ["m", "n", "m0", "l/1"] {
            let k = l.kv("ns", outside);
            assert!(!(start <= k && k < end), "{outside:?}");
        }
        assert!(l.kv("ns\0", "m/1") >= end);
        assert!(l.kv("nr", "m/1") < start);

        let (start, _) = l.kv_page("ns", "m/", Some("m/1"));
        assert!(l.kv("ns", "m/1") < start && start <= l.kv("ns", "m/1\0"));
        // `after` before the prefix starts the page at the prefix.
        assert_eq!(l.kv_page("ns", "m/", Some("a")).0, l.kv("ns", "m/"));
    }

    #[test]
    fn prefix_end_carries_past_ff_bytes() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xFF"), b"b");
        assert_eq!(prefix_end(b"a\0"), b"a\x01");
        assert_eq!(prefix_end(b"\xFF\xFF"), b"\0");
    }

    #[test]
    fn the_prefix_is_one_folder() {
        assert_eq!(Layout::new("/x").root(), b"/x/");
        assert_eq!(Layout::new("/x/").root(), b"/x/");
        assert!(Layout::new("/x").kv("n", "k").starts_with(b"/x/kv/n\0"));
        assert!(
            Layout::new("/x")
                .owner("c", "n")
                .starts_with(b"/x/owners/c\0")
        );
    }
}
