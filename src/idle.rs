//! The idle timer: connections in order of their last traffic, as a doubly linked list threaded
//! through the slab.
//!
//! Every connection has the same idle timeout, so the connection that has been quiet longest is
//! always the first to expire: a list ordered by last activity (least recently active first) is
//! enough, and a heap or a timer wheel is not needed. Moving a connection to the back on traffic,
//! removing it on close and finding the next deadline are all O(1); the reactor never scans its
//! connections to find the idle ones.

use std::time::Instant;

use slab::Slab;

/// "No neighbour": slab keys stay below `MAX_CONNECTIONS_LIMIT`, so this value is never a key.
const NIL: u32 = u32::MAX;

/// A connection's place in the idle list. Keys are stored as `u32` (they stay below 2^24) to
/// keep an idle connection small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    prev: u32,
    next: u32,
    /// When the connection last moved a byte (or was accepted). Set by [`IdleList::touch`].
    since: Instant,
}

impl Link {
    pub(crate) fn new(now: Instant) -> Link {
        Link {
            prev: NIL,
            next: NIL,
            since: now,
        }
    }

    pub(crate) fn since(&self) -> Instant {
        self.since
    }
}

/// Anything stored in the slab that carries a [`Link`].
pub(crate) trait Linked {
    fn link(&mut self) -> &mut Link;
}

/// Head (least recently active) and tail (most recently active) of the list.
#[derive(Debug)]
pub(crate) struct IdleList {
    head: u32,
    tail: u32,
}

impl Default for IdleList {
    fn default() -> IdleList {
        IdleList {
            head: NIL,
            tail: NIL,
        }
    }
}

impl IdleList {
    /// The key of the connection quiet the longest, if any.
    pub(crate) fn oldest(&self) -> Option<usize> {
        (self.head != NIL).then_some(self.head as usize)
    }

    /// Appends `key` (just inserted, not yet in the list) as the most recently active.
    pub(crate) fn push_back<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let key32 = key as u32;
        let old_tail = self.tail;
        if let Some(entry) = slab.get_mut(key) {
            let link = entry.link();
            link.prev = old_tail;
            link.next = NIL;
        }
        match slab.get_mut(old_tail as usize) {
            Some(tail) if old_tail != NIL => tail.link().next = key32,
            _ => self.head = key32,
        }
        self.tail = key32;
    }

    /// Removes `key` from the list (before it leaves the slab, or to move it).
    pub(crate) fn unlink<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize) {
        let Some(entry) = slab.get_mut(key) else {
            return;
        };
        let Link { prev, next, .. } = *entry.link();
        match slab.get_mut(prev as usize) {
            Some(before) if prev != NIL => before.link().next = next,
            _ => self.head = next,
        }
        match slab.get_mut(next as usize) {
            Some(after) if next != NIL => after.link().prev = prev,
            _ => self.tail = prev,
        }
    }

    /// Records traffic on `key` at `now`: it becomes the most recently active.
    pub(crate) fn touch<T: Linked>(&mut self, slab: &mut Slab<T>, key: usize, now: Instant) {
        self.unlink(slab, key);
        if let Some(entry) = slab.get_mut(key) {
            entry.link().since = now;
        }
        self.push_back(slab, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    impl Linked for Link {
        fn link(&mut self) -> &mut Link {
            self
        }
    }

    /// Walks the list from head to tail, checking the back links on the way.
    fn order(list: &IdleList, slab: &mut Slab<Link>) -> Vec<usize> {
        let mut keys = Vec::new();
        let mut prev = NIL;
        let mut at = list.head;
        while at != NIL {
            let link = *slab[at as usize].link();
            assert_eq!(link.prev, prev, "back link of {at}");
            keys.push(at as usize);
            prev = at;
            at = link.next;
        }
        assert_eq!(list.tail, prev, "tail");
        keys
    }

    #[test]
    fn oldest_first_touch_moves_to_back_unlink_removes() {
        let t0 = Instant::now();
        let mut slab = Slab::new();
        let mut list = IdleList::default();
        assert_eq!(list.oldest(), None);
        let keys: Vec<usize> = (0..4).map(|_| slab.insert(Link::new(t0))).collect();
        for &key in &keys {
            list.push_back(&mut slab, key);
        }
        assert_eq!(order(&list, &mut slab), [0, 1, 2, 3]);

        let t1 = t0 + Duration::from_secs(1);
        list.touch(&mut slab, 0, t1);
        assert_eq!(order(&list, &mut slab), [1, 2, 3, 0]);
        assert_eq!(slab[0].since(), t1);
        list.touch(&mut slab, 0, t1); // touching the tail keeps it there
        assert_eq!(order(&list, &mut slab), [1, 2, 3, 0]);

        list.unlink(&mut slab, 2); // middle
        slab.remove(2);
        list.unlink(&mut slab, 1); // head
        slab.remove(1);
        assert_eq!(order(&list, &mut slab), [3, 0]);
        assert_eq!(list.oldest(), Some(3));
        list.unlink(&mut slab, 0); // tail
        slab.remove(0);
        list.unlink(&mut slab, 3); // last one
        slab.remove(3);
        assert_eq!(list.oldest(), None);
        assert_eq!(order(&list, &mut slab), Vec::<usize>::new());

        // A reused key starts fresh at the back.
        let key = slab.insert(Link::new(t1));
        list.push_back(&mut slab, key);
        assert_eq!(order(&list, &mut slab), [key]);
    }
}
