//! The `.tir` text form: printer and parser (to be written).
