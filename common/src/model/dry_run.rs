//! The dry-run image model: a real PNG per call, labelled with the scene, the variant and the
//! prompt drawn in it, and answering with a response id and model version as Gemini does (generate
//! embeds the provenance in it like in any image), so a person can tell the placeholders
//! apart and check the whole pipeline without a Google account, a network or a cent.

use super::{GeneratedImage, ImageModel, ImageRequest, ModelError};
use crate::problem::ErrorCode;
use async_trait::async_trait;
use bytes::Bytes;
use font8x8::UnicodeFonts;
use sha2::{Digest, Sha256};

/// Long side of a placeholder in pixels: big enough to read, small enough to write 200 quickly.
const LONG_SIDE: u32 = 512;

/// The `modelVersion` the dry run answers with.
pub const MODEL_VERSION: &str = "assetgen-dry-run";

#[derive(Debug, Clone, Default)]
pub struct DryRunModel;

#[async_trait]
impl ImageModel for DryRunModel {
    fn is_live(&self) -> bool {
        false
    }

    async fn generate(&self, request: &ImageRequest) -> Result<GeneratedImage, ModelError> {
        let request = request.clone();
        let png = tokio::task::spawn_blocking(move || placeholder_png(&request))
            .await
            .map_err(|e| ModelError::Permanent {
                code: ErrorCode::Internal,
                detail: format!("placeholder task failed: {e}"),
            })?
            .map_err(|e| ModelError::Permanent {
                code: ErrorCode::Internal,
                detail: format!("placeholder encoding failed: {e}"),
            })?;
        Ok(GeneratedImage {
            mime_type: "image/png".to_owned(),
            bytes: Bytes::from(png),
            // Like Gemini's answer, so provenance is the same shape and tested on every dry run.
            response_id: Some(format!("dry-run-{}", uuid::Uuid::now_v7().simple())),
            model_version: Some(MODEL_VERSION.to_owned()),
        })
    }
}

struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: u32, height: u32, fill: [u8; 3]) -> Self {
        let rgb = fill.iter().copied().cycle().take((width * height * 3) as usize).collect();
        Self { width, height, rgb }
    }

    fn rect(&mut self, x0: u32, y0: u32, w: u32, h: u32, color: [u8; 3]) {
        for y in y0..(y0 + h).min(self.height) {
            for x in x0..(x0 + w).min(self.width) {
                let i = ((y * self.width + x) * 3) as usize;
                self.rgb[i..i + 3].copy_from_slice(&color);
            }
        }
    }

    /// Draws one line of 8x8 glyphs at `scale`, clipped to the canvas; returns the line height.
    fn text(&mut self, x0: u32, y0: u32, scale: u32, text: &str, color: [u8; 3]) -> u32 {
        for (i, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            let gx = x0 + i as u32 * 8 * scale;
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        self.rect(gx + col * scale, y0 + row as u32 * scale, scale, scale, color);
                    }
                }
            }
        }
        8 * scale + scale * 2
    }
}

/// A background colour per scene (hue from its hash) and a lighter shade per variant.
fn palette(scene_id: &str, variant: u8) -> [u8; 3] {
    let hash = Sha256::digest(scene_id.as_bytes());
    let base = [hash[0], hash[1], hash[2]].map(|c| 40 + c / 3);
    let lift = u8::saturating_mul(variant.saturating_sub(1), 45);
    base.map(|c| c.saturating_add(lift))
}

/// Splits text into lines of at most `width` characters, on spaces where it can.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word = word.to_owned();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(head);
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

pub fn placeholder_png(request: &ImageRequest) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = request.aspect_ratio.dimensions(LONG_SIDE);
    let mut canvas = Canvas::new(width, height, palette(&request.scene_id, request.variant));
    let ink = [255, 255, 255];
    let margin = 12;
    canvas.rect(0, 0, width, 6, ink);
    canvas.rect(0, height.saturating_sub(6), width, 6, ink);
    let mut y = margin + 6;
    y += canvas.text(margin, y, 2, "DRY RUN", [255, 230, 120]);
    let big = if width >= 400 { 4 } else { 3 };
    y += canvas.text(margin, y, big, &request.scene_id, ink);
    y += canvas.text(margin, y, big, &format!("variant {}", request.variant), ink);
    y += canvas.text(margin, y, 1, &format!("{} refs, {}", request.refs.len(), request.aspect_ratio), ink);
    y += margin;
    let columns = ((width - 2 * margin) / 16).max(1) as usize;
    for line in wrap(&request.prompt, columns) {
        if y + 20 > height.saturating_sub(margin) {
            break;
        }
        y += canvas.text(margin, y, 2, &line, ink);
    }

    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&canvas.rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AspectRatio;

    fn request(scene: &str, variant: u8, ratio: &str) -> ImageRequest {
        ImageRequest {
            model: "gemini-2.5-flash-image".into(),
            scene_id: scene.into(),
            variant,
            prompt: "product on clean bg #7 with a long prompt that needs wrapping over several lines".into(),
            aspect_ratio: AspectRatio::parse(ratio).expect("ratio"),
            refs: vec![],
        }
    }

    fn decode(bytes: &[u8]) -> (png::Info<'static>, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec())).read_info().expect("valid png");
        let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
        reader.next_frame(&mut pixels).expect("frame");
        (reader.info().clone(), pixels)
    }

    #[tokio::test]
    async fn makes_a_decodable_labelled_png_of_the_requested_shape() {
        let image = DryRunModel.generate(&request("BATCH-007", 2, "16:9")).await.expect("png");
        assert_eq!(image.mime_type, "image/png");
        let (info, _) = decode(&image.bytes);
        assert_eq!((info.width, info.height), (512, 288));
        assert_eq!(image.model_version.as_deref(), Some(MODEL_VERSION));
        let id = image.response_id.clone().expect("a response id");
        let again = DryRunModel.generate(&request("BATCH-007", 2, "16:9")).await.expect("png");
        assert_ne!(again.response_id, Some(id), "every answer has its own id");
    }

    #[test]
    fn variants_and_scenes_look_different() {
        let a = placeholder_png(&request("A", 1, "1:1")).expect("png");
        let b = placeholder_png(&request("A", 2, "1:1")).expect("png");
        let c = placeholder_png(&request("B", 1, "1:1")).expect("png");
        let (pa, pb, pc) = (decode(&a).1, decode(&b).1, decode(&c).1);
        assert_ne!(pa, pb, "variants differ in pixels");
        assert_ne!(pa, pc, "scenes differ in pixels");
        // Text is drawn: not every pixel is the background colour.
        assert!(pa.chunks(3).any(|p| p == [255, 255, 255]));
    }

    #[test]
    fn wrap_respects_width_and_keeps_words() {
        let lines = wrap("aaa bbb ccc dddddddddd", 7);
        assert_eq!(lines, vec!["aaa bbb", "ccc", "ddddddd", "ddd"]);
    }
}
