//! QConfig presets.
