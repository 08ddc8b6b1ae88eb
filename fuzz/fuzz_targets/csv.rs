//! Arbitrary bytes as a data file (replay, backtest, optimizer): a table or a typed error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = quorum::replay::Table::parse_bytes(data) {
        for row in 0..table.rows() {
            for column in 0..table.columns.len() {
                let _ = table.cell(row, column);
            }
        }
    }
});
