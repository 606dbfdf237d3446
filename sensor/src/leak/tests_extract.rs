//! Detector tests, what requests carry: credentials taken out of real-world request shapes, and what is not a credential.
//! Helpers (`pair`, `inspect`, `one`, `none`, …) are the table tests' own.

#[allow(unused_imports)]
use super::tests::*;
