//! Connections the pipeline has no more use for, muted in the kernel.
//!
//! The pipeline judges a connection from its first bytes: a side `--role`
//! leaves out, or traffic it will not parse (not HTTP — a TLS database or
//! mail connection —, a WebSocket after its upgrade, HTTP/2 joined midway).
//! Copying the rest of such a connection into the ring buffer (and waking
//! the reader for it) is wasted work in the probed process and in the
//! sensor.  The kernel side looks a call's connection up in `MUTED` — only
//! while `MUTING[0]` is set, so that with nothing muted no call pays the
//! lookup — and counts it instead of copying it
//! (`sensor_capture_muted_calls_total`).  `SSL_free` takes the entry out in
//! the kernel; the pipeline reports every muted connection that leaves its
//! table ([`MuteUpdates::unmuted`]); the map is LRU, so anything missed ages
//! out.

use std::collections::HashSet;
use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData};
use aya::Ebpf;
use sensor_common::ConnKey;

use super::error::CaptureError;
use crate::capture::event::ConnId;
use crate::pipeline::MuteUpdates;

/// The kernel's list of muted connections and its on/off switch.
pub struct Muter {
    maps: Mutex<Maps>,
}

struct Maps {
    muted: HashMap<MapData, ConnKey, u8>,
    freed: HashMap<MapData, ConnKey, u64>,
    muting: Array<MapData, u64>,
    /// What was put in `muted` and not taken out yet (as far as this side
    /// knows: the kernel also takes entries out at `SSL_free`, and the LRU
    /// may evict).  The switch is on while it is not empty.
    listed: HashSet<ConnId>,
    switched_on: bool,
}

/// `listed` is rebuilt from the kernel's map past this (updates the pipeline
/// could not queue leave stale keys behind).
const MAX_LISTED: usize = 2 * sensor_common::MAX_TRACKED_CONNECTIONS as usize;

fn key(id: &ConnId) -> ConnKey {
    ConnKey {
        tgid: id.tgid,
        _pad: 0,
        ssl: id.ssl,
    }
}

impl Maps {
    fn switch(&mut self, on: bool) {
        if on == self.switched_on {
            return;
        }
        match self.muting.set(0, on as u64, 0) {
            Ok(()) => self.switched_on = on,
            Err(e) => tracing::warn!(
                "cannot switch connection muting {} in the kernel ({e}): connections the sensor \
                 has no use for are still copied, and dropped by the sensor",
                if on { "on" } else { "off" }
            ),
        }
    }
}

impl Muter {
    /// Takes the maps out of the loaded object (they are used from the
    /// pipeline's task, not under the capture's lock).
    pub(crate) fn take(ebpf: &mut Ebpf) -> Result<Muter, CaptureError> {
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| CaptureError::MissingObject(format!("map {name}")))
        };
        let muted = HashMap::try_from(take(ebpf, "MUTED")?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let muting = Array::try_from(take(ebpf, "MUTING")?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        let freed = HashMap::try_from(take(ebpf, "FREED")?)
            .map_err(|e| CaptureError::Load(e.to_string()))?;
        Ok(Muter {
            maps: Mutex::new(Maps {
                muted,
                freed,
                muting,
                listed: HashSet::new(),
                switched_on: false,
            }),
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies the pipeline's updates: connections of no more use are
    /// muted, those that left its table forgotten.  Returns how many were
    /// muted.
    pub fn apply(&self, updates: &MuteUpdates) -> usize {
        if updates.muted.is_empty() && updates.unmuted.is_empty() {
            return 0;
        }
        let mut m = self.maps();
        for id in &updates.unmuted {
            if m.listed.remove(id) {
                let _ = m.muted.remove(&key(id));
            }
        }
        let mut muted = 0;
        // On before the entries go in: a connection freed from now on is
        // taken out by the kernel itself.
        if !updates.muted.is_empty() {
            m.switch(true);
        }
        for (id, since_ns) in &updates.muted {
            let k = key(id);
            if let Err(e) = m.muted.insert(k, 1, 0) {
                tracing::debug!("cannot mute connection {id:?}: {e}");
                continue;
            }
            // Freed since it began (before the entry went in, or the kernel
            // would have taken it out): its `SSL*` may be a new connection's.
            if m.freed.get(&k, 0).is_ok_and(|t| t >= *since_ns) {
                let _ = m.muted.remove(&k);
                continue;
            }
            m.listed.insert(*id);
            muted += 1;
        }
        if m.listed.len() > MAX_LISTED {
            let now: HashSet<ConnId> = m
                .muted
                .keys()
                .filter_map(Result::ok)
                .map(|k| ConnId {
                    tgid: k.tgid,
                    ssl: k.ssl,
                })
                .collect();
            m.listed = now;
        }
        // On after the entries are in, off after they are out.
        let on = !m.listed.is_empty();
        m.switch(on);
        muted
    }

    /// Connections muted right now in the kernel (tests).
    pub fn len(&self) -> usize {
        self.maps().muted.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the kernel looks calls up in the list (tests).
    pub fn is_on(&self) -> bool {
        self.maps().switched_on
    }
}
