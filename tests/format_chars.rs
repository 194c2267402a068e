//! New ids and labels refuse Unicode format characters (category Cf: the
//! invisible ones and the bidirectional controls) as they refuse control
//! characters: such a name could pass for another member's, or reorder a
//! row of the command line's tables. The refusal changes nothing.

use tokenvault::{Actor, GenerateOptions, Role, TokenStore};

/// Right-to-left override, zero-width space, byte-order mark, left-to-right
/// mark, right-to-left isolate, soft hyphen, word joiner, a tag character.
const FORMAT: [char; 8] = [
    '\u{202E}',
    '\u{200B}',
    '\u{FEFF}',
    '\u{200E}',
    '\u{2067}',
    '\u{AD}',
    '\u{2060}',
    '\u{E0041}',
];

#[test]
fn new_ids_with_format_characters_are_refused() {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    for c in FORMAT {
        let user = format!("ad{c}am");
        let e = store.add_member("acme", &user, Role::Admin).unwrap_err();
        assert_eq!(e.kind(), "usage", "{c:?}: {e}");
        assert!(e.to_string().contains("format characters"), "{e}");
        assert_eq!(store.member_role("acme", &user), None);
        let org = format!("ac{c}me");
        let e = store.add_member(&org, "olivia", Role::Owner).unwrap_err();
        assert_eq!(e.kind(), "usage", "{c:?}: {e}");
        assert_eq!(store.member_role(&org, "olivia"), None);
    }
    // Letters of every script, marks and emoji are no format characters.
    for ok in ["adam", "Zoë", "أحمد", "שרה", "李雷", "e\u{301}", "🙂"] {
        store.add_member("acme", ok, Role::User).unwrap();
        assert_eq!(store.member_role("acme", ok), Some(Role::User));
    }
}

#[test]
fn new_labels_with_format_characters_are_refused() {
    let store = TokenStore::temporary().unwrap();
    store.add_member("acme", "olivia", Role::Owner).unwrap();
    store.add_member("acme", "uma", Role::User).unwrap();
    let olivia = Actor::new("acme", "olivia");
    let uma = Actor::new("acme", "uma");
    for c in FORMAT {
        let label = format!("ci{c}deploy");
        let e = store
            .generate(&uma, GenerateOptions::default().label(label.clone()))
            .unwrap_err();
        assert_eq!(e.kind(), "usage", "{c:?}: {e}");
        let e = store
            .assign(&olivia, "uma", GenerateOptions::default().label(label))
            .unwrap_err();
        assert_eq!(e.kind(), "usage", "{c:?}: {e}");
    }
    assert!(
        store.list_org(&olivia).unwrap().is_empty(),
        "nothing was issued"
    );
    let t = store
        .generate(&uma, GenerateOptions::default().label("déploiement — CI"))
        .unwrap();
    assert_eq!(t.info.label.as_deref(), Some("déploiement — CI"));
}
