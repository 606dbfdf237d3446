//! Connections out of the `--role` scope, muted in the kernel.
//!
//! The pipeline learns a connection's role from its first bytes; when
//! `--role` leaves that role out, copying the rest of the connection into the
//! ring buffer (and waking the reader for it) is wasted work in the probed
//! process and in the sensor.  The kernel side looks a call's connection up in
//! `MUTED` (only while `MUTING[0]` is set) and counts it instead of copying it
//! (`sensor_capture_out_of_scope_calls_total`).  `SSL_free` takes the entry
//! out; the pipeline reports connections that went without one
//! ([`ScopeUpdates::gone`]); the map is LRU, so what is left ages out.

use std::sync::Mutex;

use aya::maps::{Array, HashMap, MapData};
use aya::Ebpf;
use sensor_common::ConnKey;

use super::error::CaptureError;
use crate::capture::event::ConnId;
use crate::pipeline::ScopeUpdates;

/// The kernel's list of muted connections and its on/off switch.
pub struct Muter {
    maps: Mutex<Maps>,
}

struct Maps {
    muted: HashMap<MapData, ConnKey, u8>,
    muting: Array<MapData, u64>,
}

fn key(id: &ConnId) -> ConnKey {
    ConnKey {
        tgid: id.tgid,
        _pad: 0,
        ssl: id.ssl,
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
        Ok(Muter {
            maps: Mutex::new(Maps { muted, muting }),
        })
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts over: the list is emptied, and the kernel looks calls up in it
    /// only when `on` (a `--role` other than `any`).
    pub fn reset(&self, on: bool) {
        let mut m = self.maps();
        if let Err(e) = m.muting.set(0, 0, 0) {
            tracing::warn!("cannot switch off connection muting in the kernel: {e}");
        }
        let keys: Vec<ConnKey> = m.muted.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = m.muted.remove(&k);
        }
        if on {
            if let Err(e) = m.muting.set(0, 1, 0) {
                tracing::warn!(
                    "cannot switch on connection muting in the kernel ({e}): connections out of \
                     the --role scope are still copied, and dropped by the sensor"
                );
            }
        }
    }

    /// Applies the pipeline's updates: new out-of-scope connections are
    /// muted, gone ones forgotten.  Returns how many were muted.
    pub fn apply(&self, updates: &ScopeUpdates) -> usize {
        if updates.muted.is_empty() && updates.gone.is_empty() {
            return 0;
        }
        let mut m = self.maps();
        for id in &updates.gone {
            let _ = m.muted.remove(&key(id));
        }
        let mut muted = 0;
        for id in &updates.muted {
            match m.muted.insert(key(id), 1, 0) {
                Ok(()) => muted += 1,
                Err(e) => tracing::debug!("cannot mute connection {id:?}: {e}"),
            }
        }
        muted
    }

    /// Connections muted right now (tests).
    pub fn len(&self) -> usize {
        self.maps().muted.keys().filter(Result::is_ok).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
