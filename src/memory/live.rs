//! A family's live access ids, oldest first, without a heap allocation in
//! the common case of at most one (a refresh token exchanged once and
//! holding one live access token): every refresh entry carries one of
//! these, so a `Vec` would cost each family an allocation of its own.

/// Live access ids, oldest first: none or one held inline, more on the
/// heap. Compares and reads as the slice it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) enum Live {
    #[default]
    Empty,
    One([u8; 16]),
    /// Boxed: the one-id form sets the size (24 bytes, not 32), and a
    /// family holding two live access tokens or more is rare.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<[u8; 16]>>),
}

impl Live {
    /// The ids, oldest first.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[[u8; 16]] {
        match self {
            Live::Empty => &[],
            Live::One(id) => std::slice::from_ref(id),
            Live::Many(v) => v,
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, [u8; 16]> {
        self.as_slice().iter()
    }

    /// Adds `id` as the newest.
    pub(crate) fn push(&mut self, id: [u8; 16]) {
        match self {
            Live::Empty => *self = Live::One(id),
            Live::One(first) => *self = Live::Many(Box::new(vec![*first, id])),
            Live::Many(v) => v.push(id),
        }
    }

    /// Keeps the ids for which `keep` says so, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&[u8; 16]) -> bool) {
        match self {
            Live::Empty => {}
            Live::One(id) => {
                if !keep(id) {
                    *self = Live::Empty;
                }
            }
            Live::Many(v) => {
                v.retain(|id| keep(id));
                match v.len() {
                    0 => *self = Live::Empty,
                    1 => *self = Live::One(v[0]),
                    _ => {}
                }
            }
        }
    }
}

impl FromIterator<[u8; 16]> for Live {
    fn from_iter<I: IntoIterator<Item = [u8; 16]>>(iter: I) -> Live {
        let mut live = Live::Empty;
        for id in iter {
            live.push(id);
        }
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smaller than the `Vec` it replaces, and it holds one id inline.
    #[test]
    fn smaller_than_a_vec() {
        assert!(std::mem::size_of::<Live>() <= 24);
        assert!(matches!(Live::from_iter([[1; 16]]), Live::One(_)));
    }

    /// Random pushes and removals give what a `Vec` gives, in the same
    /// order, with the small forms taken whenever they fit.
    #[test]
    fn behaves_as_a_vec() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut live = Live::default();
        let mut model: Vec<[u8; 16]> = Vec::new();
        for _ in 0..20_000 {
            let r = next();
            if r % 3 == 0 && !model.is_empty() {
                let gone = model[(r as usize / 3) % model.len()];
                live.retain(|x| *x != gone);
                model.retain(|x| *x != gone);
            } else {
                let id = [(r % 7) as u8; 16];
                live.push(id);
                model.push(id);
            }
            assert_eq!(live.as_slice(), &model[..]);
            assert_eq!(live.len(), model.len());
            match model.len() {
                0 => assert_eq!(live, Live::Empty),
                1 => assert_eq!(live, Live::One(model[0])),
                _ => assert!(matches!(live, Live::Many(_))),
            }
            let rebuilt: Live = model.iter().copied().collect();
            assert_eq!(rebuilt.as_slice(), &model[..]);
        }
    }
}
