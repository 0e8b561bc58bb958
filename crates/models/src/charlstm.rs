//! textgenrnn char-LSTM (later).
