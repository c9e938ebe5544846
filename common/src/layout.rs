//! Object names of the bucket layout (DESIGN.md "State in the object store"), in one place.

use crate::domain::{BatchId, SceneId};

pub fn manifest(batch: &BatchId) -> String {
    format!("batches/{batch}/manifest.json")
}

pub fn rows_prefix(batch: &BatchId) -> String {
    format!("batches/{batch}/rows/")
}

pub fn row_state(batch: &BatchId, row: u32) -> String {
    format!("batches/{batch}/rows/{row:04}.json")
}

/// The row number of a row-state object name, if it is one.
pub fn row_of_state_name(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    file.strip_suffix(".json")?.parse().ok()
}

pub fn image(batch: &BatchId, scene: &SceneId, variant: u8) -> String {
    format!("images/{batch}/{scene}-v{variant}.png")
}

/// The provenance sidecar of an image object: `images/{batch}/{scene}-v{n}.json` beside its `.png`.
pub fn sidecar(image_object: &str) -> String {
    let stem = image_object.strip_suffix(".png").unwrap_or(image_object);
    format!("{stem}.json")
}

/// Whether an object under `images/` is an image (not a sidecar).
pub fn is_image(name: &str) -> bool {
    name.ends_with(".png")
}

/// Content-addressed reference cache.
pub fn reference(sha256_hex: &str) -> String {
    format!("refs/{sha256_hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_names_sort_and_round_trip() {
        let b = BatchId::new();
        assert_eq!(row_of_state_name(&row_state(&b, 7)), Some(7));
        assert!(row_state(&b, 9) < row_state(&b, 10), "zero padding keeps listing order = row order");
        assert_eq!(row_of_state_name(&manifest(&b)), None);
        let scene = SceneId::parse("HERO-001").expect("scene");
        assert_eq!(sidecar(&image(&b, &scene, 2)), format!("images/{b}/HERO-001-v2.json"));
        assert!(is_image(&image(&b, &scene, 2)) && !is_image(&sidecar(&image(&b, &scene, 2))));
    }
}
