//! Detector tests, how responses give credentials back: escapers, encodings and look-alikes of real frameworks.
//! Helpers (`pair`, `inspect`, `one`, `none`, …) are the table tests' own.

#[allow(unused_imports)]
use super::tests::*;
