//! How long the e2e tests give the sensor, in one place.

use std::time::Duration;

/// From the client's last byte to the pair/finding being written.
pub const SENSOR_LAG: Duration = Duration::from_secs(20);
/// After the expected outputs appeared: time for late (unexpected) ones to
/// show up before asserting that there are none.
pub const SETTLE: Duration = Duration::from_millis(1500);
