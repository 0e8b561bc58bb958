//! Observers (filled in by the observer work).
