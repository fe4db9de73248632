//! The fleet loader never panics, whatever the bytes: random bytes, random
//! YAML-ish text, and mutations of a valid document all end in `Ok` or in
//! diagnostics with a position inside the input.

use lxd_gitops::fleet::load::load_texts;
use proptest::prelude::*;

const VALID: &str = "kind: Instance\ncluster: c\nname: web-1\nproject: web\nprofiles: [default]\nconfig:\n  limits.cpu: 2\ndevices:\n  eth0: {type: nic, network: br0}\n";

fn check(text: &str) {
    let (_, diags) = load_texts(&[("f.yaml", text)]);
    let lines = text.split('\n').count().max(1);
    for d in diags {
        assert!(d.line >= 1 && d.line <= lines + 1, "line {} outside 1..={} for {d}", d.line, lines + 1);
        assert!(d.column >= 1, "column 0 in {d}");
        assert!(!d.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(s in "\\PC{0,300}") {
        check(&s);
    }

    #[test]
    fn yamlish_text_never_panics(s in "([a-z:\\- \\[\\]{},'\"&*!|>#%@`\\n\\t]|kind: |Instance|name: |---){0,80}") {
        check(&s);
    }

    #[test]
    fn mutated_valid_documents_never_panic(pos in 0usize..VALID.len(), del in 0usize..8, ins in "[\\x00-\\x7f]{0,6}") {
        let mut s = VALID.to_string();
        let pos = (0..=pos).rev().find(|p| s.is_char_boundary(*p)).unwrap_or(0);
        let end = (pos + del).min(s.len());
        s.replace_range(pos..end, &ins);
        check(&s);
    }
}

#[test]
fn random_bytes_in_a_file_give_a_positioned_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), [b'k', b':', b' ', 0xff, 0xfe, b'\n']).unwrap();
    let err = lxd_gitops::fleet::load_and_validate(dir.path()).unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert_eq!((err[0].file.as_str(), err[0].line, err[0].column), ("bad.yaml", 1, 4));
    assert!(err[0].message.contains("UTF-8"));
}

#[test]
fn alias_bombs_are_refused_quickly() {
    let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        s.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    let (_, diags) = load_texts(&[("bomb.yaml", &s)]);
    assert_eq!(diags.len(), 1);
    assert!(diags[0].message.contains("aliases"), "{}", diags[0].message);
    assert_eq!(diags[0].line, 2);
}
