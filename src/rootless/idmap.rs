//! User-namespace id maps as data: which ids a namespace sees for which ids of its parent, and
//! back. A layer records owners as the namespace that *wrote* the tree saw them, whichever
//! namespace *reads* it: both maps are needed to get from one to the other.

use serde::{Deserialize, Serialize};

/// One line of `/proc/PID/uid_map`: `count` ids from `inside` are the parent's ids from
/// `outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

impl MapRange {
    pub fn new(inside: u32, outside: u32, count: u32) -> MapRange {
        MapRange {
            inside,
            outside,
            count,
        }
    }
}

/// A user namespace's uid and gid maps, relative to the namespace of the process that
/// orchestrates the work (the user's own: the host's, unless fissile-oci itself runs in a
/// container).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMaps {
    pub uids: Vec<MapRange>,
    pub gids: Vec<MapRange>,
}

impl IdMaps {
    /// The orchestrating namespace itself: every id is itself.
    pub fn identity() -> IdMaps {
        let all = vec![MapRange::new(0, 0, u32::MAX)];
        IdMaps {
            uids: all.clone(),
            gids: all,
        }
    }

    pub fn is_identity(&self) -> bool {
        *self == IdMaps::identity()
    }

    /// The parent's uid that this namespace's `uid` is, if it maps.
    pub fn uid_outside(&self, uid: u32) -> Option<u32> {
        outside(&self.uids, uid)
    }

    pub fn gid_outside(&self, gid: u32) -> Option<u32> {
        outside(&self.gids, gid)
    }

    /// The uid this namespace sees for the parent's `uid`, if it maps.
    pub fn uid_inside(&self, uid: u32) -> Option<u32> {
        inside(&self.uids, uid)
    }

    pub fn gid_inside(&self, gid: u32) -> Option<u32> {
        inside(&self.gids, gid)
    }
}

fn outside(map: &[MapRange], id: u32) -> Option<u32> {
    map.iter().find_map(|r| {
        let offset = id.checked_sub(r.inside)?;
        (offset < r.count).then(|| r.outside + offset)
    })
}

fn inside(map: &[MapRange], id: u32) -> Option<u32> {
    map.iter().find_map(|r| {
        let offset = id.checked_sub(r.outside)?;
        (offset < r.count).then(|| r.inside + offset)
    })
}

/// Translates the owners a reading namespace sees into the owners the writing namespace saw.
#[derive(Clone, Debug)]
pub struct OwnerTranslation {
    reader: IdMaps,
    writer: IdMaps,
    /// Both maps are the same: nothing to translate (every root build, every tree read where
    /// it was written).
    same: bool,
}

/// An owner the writing namespace could not have given: the file came from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unmapped {
    pub kind: &'static str,
    pub seen: u32,
    pub outside: Option<u32>,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.outside {
            Some(outside) => write!(
                f,
                "owned by {} {outside}, which the user namespace that wrote the tree does not map",
                self.kind
            ),
            None => write!(
                f,
                "owned by {} {}, which this process cannot map back",
                self.kind, self.seen
            ),
        }
    }
}

impl OwnerTranslation {
    pub fn new(reader: IdMaps, writer: IdMaps) -> OwnerTranslation {
        let same = reader == writer;
        OwnerTranslation {
            reader,
            writer,
            same,
        }
    }

    /// The (uid, gid) the writing namespace saw for a file this process sees as `(uid, gid)`.
    pub fn owner(&self, uid: u32, gid: u32) -> Result<(u32, u32), Unmapped> {
        if self.same {
            return Ok((uid, gid));
        }
        let uid = self
            .reader
            .uid_outside(uid)
            .ok_or(Unmapped {
                kind: "uid",
                seen: uid,
                outside: None,
            })
            .and_then(|host| {
                self.writer.uid_inside(host).ok_or(Unmapped {
                    kind: "uid",
                    seen: uid,
                    outside: Some(host),
                })
            })?;
        let gid = self
            .reader
            .gid_outside(gid)
            .ok_or(Unmapped {
                kind: "gid",
                seen: gid,
                outside: None,
            })
            .and_then(|host| {
                self.writer.gid_inside(host).ok_or(Unmapped {
                    kind: "gid",
                    seen: gid,
                    outside: Some(host),
                })
            })?;
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sandbox's map for uid 1001 with the range 100000:65536.
    fn sandbox() -> IdMaps {
        let m = vec![MapRange::new(0, 1001, 1), MapRange::new(1, 100000, 65535)];
        IdMaps {
            uids: m.clone(),
            gids: m,
        }
    }

    /// mmdebstrap's unshare mode: container 0 is the first subordinate id.
    fn mmdebstrap() -> IdMaps {
        let m = vec![MapRange::new(0, 100000, 65536)];
        IdMaps {
            uids: m.clone(),
            gids: m,
        }
    }

    /// The tree helper's: the user and the whole range.
    fn helper() -> IdMaps {
        let m = vec![MapRange::new(0, 1001, 1), MapRange::new(1, 100000, 65536)];
        IdMaps {
            uids: m.clone(),
            gids: m,
        }
    }

    #[test]
    fn maps_go_both_ways_and_stop_at_their_ends() {
        let m = sandbox();
        assert_eq!(m.uid_outside(0), Some(1001));
        assert_eq!(m.uid_outside(1), Some(100000));
        assert_eq!(m.uid_outside(65535), Some(165534));
        assert_eq!(m.uid_outside(65536), None);
        assert_eq!(m.uid_inside(1001), Some(0));
        assert_eq!(m.uid_inside(165534), Some(65535));
        assert_eq!(m.uid_inside(165535), None);
        assert_eq!(m.uid_inside(0), None);
        assert_eq!(
            IdMaps::identity().uid_outside(u32::MAX - 1),
            Some(u32::MAX - 1)
        );
    }

    #[test]
    fn owners_are_recorded_as_their_writer_saw_them() {
        // Read on the host (the bare user): host ids back to the sandbox's view.
        let t = OwnerTranslation::new(IdMaps::identity(), sandbox());
        assert_eq!(t.owner(1001, 1001), Ok((0, 0)));
        assert_eq!(t.owner(100999, 100041), Ok((1000, 42)));
        assert_eq!(
            t.owner(0, 0),
            Err(Unmapped {
                kind: "uid",
                seen: 0,
                outside: Some(0)
            })
        );
        // Read in the tree helper: an mmdebstrap tree, whose root is the first subordinate id.
        let t = OwnerTranslation::new(helper(), mmdebstrap());
        assert_eq!(t.owner(1, 43), Ok((0, 42)));
        assert_eq!(t.owner(65536, 1), Ok((65535, 0)));
        assert!(
            t.owner(0, 1).is_err(),
            "the user itself is not in mmdebstrap's map"
        );
        // A sandbox's tree read in the tree helper: the same ids.
        let t = OwnerTranslation::new(helper(), sandbox());
        assert_eq!(t.owner(0, 0), Ok((0, 0)));
        assert_eq!(t.owner(1000, 65534), Ok((1000, 65534)));
        // Root: nothing to do.
        let t = OwnerTranslation::new(IdMaps::identity(), IdMaps::identity());
        assert_eq!(t.owner(1001, 7), Ok((1001, 7)));
    }
}
