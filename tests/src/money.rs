//! The money checks every end-to-end run ends with: the budget spent exactly what the stored
//! images cost and holds nothing, and `assetgen ledger check` reconciles the ledger to the cent.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Asserts that `budget` (a `GET /v1/budget` answer) spent exactly `images` at `price_usd` each and
/// holds nothing any more; returns what was spent.
pub fn assert_spent_exactly(budget: &Value, images: usize, price_usd: f64) -> f64 {
    let spent = budget["spent_usd"].as_f64().unwrap_or_else(|| panic!("no spent_usd: {budget}"));
    assert!((spent - images as f64 * price_usd).abs() < 1e-9, "spent {spent} for {images} images: {budget}");
    assert_eq!(budget["reserved_usd"].as_f64(), Some(0.0), "the ended batch holds nothing any more: {budget}");
    spent
}

/// Runs `binary ledger check` on the store `store_env` points at (`ASSETGEN_STORE`, and
/// `STORAGE_EMULATOR_HOST` for fake-gcs-server), which must pass; returns its report.
pub fn assert_ledger_checks(binary: &Path, store_env: &[(&str, &str)]) -> String {
    let check =
        Command::new(binary).args(["ledger", "check"]).envs(store_env.iter().copied()).output().expect("ledger check");
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "ledger check failed:\n{report}{}", String::from_utf8_lossy(&check.stderr));
    report
}
