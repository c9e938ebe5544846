//! Provenance inside a PNG: `iTXt` chunks inserted before the image data, the pixels untouched.
//!
//! The record itself is `assetgen:provenance` (compressed JSON, the same as the sidecar's without
//! the stored bytes' hash, which a file cannot hold about itself); `Description` (the prompt as
//! sent), `Source` (the model that answered) and `Software` are PNG's registered keywords, so any
//! image viewer or `exiftool` shows the essentials.
//!
//! The chunks are encoded by the `png` crate ([`ITXtChunk`]); placing them needs only the chunk
//! boundaries (length, type, data, CRC), which are walked here, and every other byte of the
//! original is copied as it was. The result is decoded in full before it is used: an image that would
//! not decode is never stored.

use super::Provenance;
use png::text_metadata::{EncodableTextChunk, ITXtChunk};

/// The keyword of the JSON record.
pub const KEYWORD: &str = "assetgen:provenance";

const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
/// The keywords written here; chunks of the original with the same keyword are replaced.
const KEYWORDS: [&str; 4] = [KEYWORD, "Description", "Source", "Software"];

#[derive(Debug, thiserror::Error)]
pub enum PngTextError {
    #[error("the image is not a PNG")]
    NotPng,
    #[error("the PNG is malformed: {0}")]
    Malformed(String),
    #[error("the provenance cannot be encoded: {0}")]
    Encode(String),
    #[error("the PNG's provenance chunk is not a provenance record: {0}")]
    BadRecord(String),
}

/// Whether `bytes` start like a PNG.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(&SIGNATURE)
}

/// One chunk of a PNG stream: its type and where it lies (length field to CRC, inclusive).
struct Chunk {
    kind: [u8; 4],
    start: usize,
    end: usize,
    data: std::ops::Range<usize>,
}

fn chunks(png: &[u8]) -> Result<Vec<Chunk>, PngTextError> {
    if !is_png(png) {
        return Err(PngTextError::NotPng);
    }
    let mut out = Vec::new();
    let mut at = SIGNATURE.len();
    while at < png.len() {
        let head =
            png.get(at..at + 8).ok_or_else(|| PngTextError::Malformed(format!("a chunk is cut at byte {at}")))?;
        let length = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = [head[4], head[5], head[6], head[7]];
        let data = at + 8..at + 8 + length;
        let end = data.end + 4;
        if end > png.len() {
            return Err(PngTextError::Malformed(format!("chunk {} runs past the end", String::from_utf8_lossy(&kind))));
        }
        out.push(Chunk { kind, start: at, end, data });
        at = end;
        if &kind == b"IEND" {
            break;
        }
    }
    Ok(out)
}

/// The keyword of a text chunk (`tEXt`, `zTXt`, `iTXt`): its bytes up to the first NUL.
fn text_keyword<'a>(png: &'a [u8], chunk: &Chunk) -> Option<&'a [u8]> {
    if !matches!(&chunk.kind, b"tEXt" | b"zTXt" | b"iTXt") {
        return None;
    }
    let data = &png[chunk.data.clone()];
    data.iter().position(|b| *b == 0).map(|nul| &data[..nul])
}

fn encode(keyword: &str, text: &str, compressed: bool) -> Result<Vec<u8>, PngTextError> {
    let mut chunk = ITXtChunk::new(keyword, text);
    if compressed {
        chunk.compress_text().map_err(|e| PngTextError::Encode(e.to_string()))?;
    }
    let mut out = Vec::new();
    chunk.encode(&mut out).map_err(|e| PngTextError::Encode(e.to_string()))?;
    Ok(out)
}

/// `png` with `provenance` embedded: the text chunks go right before the first `IDAT`, any earlier
/// chunk with one of the same keywords is dropped, every other chunk is kept as it was.
pub fn embed(png: &[u8], provenance: &Provenance) -> Result<Vec<u8>, PngTextError> {
    let chunks = chunks(png)?;
    let first_data = chunks
        .iter()
        .position(|c| &c.kind == b"IDAT")
        .ok_or_else(|| PngTextError::Malformed("it has no image data (IDAT)".into()))?;
    let record = serde_json::to_string(provenance).map_err(|e| PngTextError::Encode(e.to_string()))?;
    let source = match &provenance.model_version {
        Some(version) => format!("{} ({version})", provenance.model),
        None => provenance.model.clone(),
    };
    let mut text = encode(KEYWORD, &record, true)?;
    text.extend(encode("Description", &provenance.prompt, false)?);
    text.extend(encode("Source", &source, false)?);
    text.extend(encode("Software", &provenance.software, false)?);

    let mut out = Vec::with_capacity(png.len() + text.len());
    out.extend_from_slice(&SIGNATURE);
    for (i, chunk) in chunks.iter().enumerate() {
        if i == first_data {
            out.extend_from_slice(&text);
        }
        let ours = text_keyword(png, chunk).is_some_and(|k| KEYWORDS.iter().any(|w| w.as_bytes() == k));
        if !ours {
            out.extend_from_slice(&png[chunk.start..chunk.end]);
        }
    }
    // Whatever follows IEND stays too: the aim is to add, never to rewrite.
    out.extend_from_slice(&png[chunks.last().map_or(png.len(), |c| c.end)..]);
    check_decodes(&out)?;
    match read(&out)? {
        Some(back) if &back == provenance => Ok(out),
        _ => Err(PngTextError::Encode("the record did not read back the same".into())),
    }
}

/// Decodes the whole image, so a PNG that would not display is never stored.
fn check_decodes(png: &[u8]) -> Result<(), PngTextError> {
    let malformed = |e: png::DecodingError| PngTextError::Malformed(e.to_string());
    let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().map_err(malformed)?;
    let size = reader.output_buffer_size().ok_or_else(|| PngTextError::Malformed("the image is too large".into()))?;
    let mut pixels = vec![0; size];
    reader.next_frame(&mut pixels).map_err(malformed)?;
    Ok(())
}

/// The provenance embedded in `png`, if it has one. Reads the chunks before the image data only.
pub fn read(png: &[u8]) -> Result<Option<Provenance>, PngTextError> {
    if !is_png(png) {
        return Err(PngTextError::NotPng);
    }
    let reader =
        png::Decoder::new(std::io::Cursor::new(png)).read_info().map_err(|e| PngTextError::Malformed(e.to_string()))?;
    let Some(chunk) = reader.info().utf8_text.iter().rev().find(|c| c.keyword == KEYWORD) else {
        return Ok(None);
    };
    let text = chunk.get_text().map_err(|e| PngTextError::BadRecord(e.to_string()))?;
    serde_json::from_str(&text).map(Some).map_err(|e| PngTextError::BadRecord(e.to_string()))
}

/// The text chunks of `png` as (keyword, text), for showing what any reader sees.
pub fn text_chunks(png: &[u8]) -> Result<Vec<(String, String)>, PngTextError> {
    let reader =
        png::Decoder::new(std::io::Cursor::new(png)).read_info().map_err(|e| PngTextError::Malformed(e.to_string()))?;
    let info = reader.info();
    let mut out: Vec<(String, String)> =
        info.uncompressed_latin1_text.iter().map(|c| (c.keyword.clone(), c.text.clone())).collect();
    out.extend(info.utf8_text.iter().filter_map(|c| c.get_text().ok().map(|t| (c.keyword.clone(), t))));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{RefOutcome, RefReport, RefSource};
    use crate::domain::{AspectRatio, BatchId, Money, RefMode, RunMode, SceneId, UserId};
    use crate::model::{ImageRequest, dry_run::placeholder_png};
    use crate::provenance::{FORMAT, LedgerRef, Price};

    fn sample(prompt: &str) -> Provenance {
        let batch_id = BatchId::new();
        let at = time::OffsetDateTime::from_unix_timestamp(1_795_000_000).expect("time");
        Provenance {
            format: FORMAT.into(),
            object: format!("images/{batch_id}/HERO-001-v2.png"),
            ledger: Some(LedgerRef {
                event: format!("{batch_id}.0003.v2.r1.spend"),
                object: format!("ledger/2026-11-28/{batch_id}.0003.v2.r1.spend.json"),
            }),
            batch_id,
            row: 3,
            scene_id: SceneId::parse("HERO-001").expect("scene"),
            variant: 2,
            prompt: prompt.into(),
            model: "gemini-2.5-flash-image".into(),
            model_version: Some("gemini-2.5-flash-image-001".into()),
            response_id: Some("Mh8gaNzTEtTbnvgPkd6C8Qg".into()),
            run_mode: RunMode::Live,
            aspect_ratio: AspectRatio::parse("16:9").expect("ratio"),
            ref_mode: RefMode::StyleAndComposition,
            refs: vec![
                RefReport {
                    url: "https://example.com/a.png".into(),
                    source: RefSource::Row,
                    sha256: Some("ab".repeat(32)),
                    bytes: Some(1234),
                    outcome: RefOutcome::Used,
                    duplicate_of: None,
                },
                RefReport {
                    url: "https://example.com/copy-of-a.png".into(),
                    source: RefSource::Global,
                    sha256: Some("ab".repeat(32)),
                    bytes: Some(1234),
                    outcome: RefOutcome::Duplicate,
                    duplicate_of: Some("https://example.com/a.png".into()),
                },
            ],
            price: Price::of(Money::from_micros(39_000)),
            user: UserId::new("lead@studio.com"),
            submitted_at: at,
            requested_at: at + time::Duration::seconds(2),
            generated_at: at + time::Duration::seconds(9),
            attempt: 2,
            round: 1,
            request_id: Some("req-1".into()),
            software: Provenance::software(),
        }
    }

    fn placeholder() -> Vec<u8> {
        placeholder_png(&ImageRequest {
            model: "gemini-2.5-flash-image".into(),
            scene_id: "HERO-001".into(),
            variant: 2,
            prompt: "a mug".into(),
            aspect_ratio: AspectRatio::parse("16:9").expect("ratio"),
            refs: vec![],
        })
        .expect("png")
    }

    fn pixels(png: &[u8]) -> Vec<u8> {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png)).read_info().expect("decodes");
        let mut out = vec![0; reader.output_buffer_size().expect("size")];
        reader.next_frame(&mut out).expect("frame");
        out
    }

    #[test]
    fn the_record_reads_back_and_the_pixels_stay_the_same() {
        let original = placeholder();
        let record = sample("a ceramic mug — «café» 珈琲, on walnut\n\nUse the references for style.");
        let with = embed(&original, &record).expect("embedded");
        assert_eq!(read(&with).expect("read"), Some(record.clone()));
        assert_eq!(pixels(&with), pixels(&original), "the image is untouched");
        let text = text_chunks(&with).expect("chunks");
        assert!(text.contains(&("Description".into(), record.prompt.clone())), "{text:?}");
        assert!(text.contains(&("Source".into(), "gemini-2.5-flash-image (gemini-2.5-flash-image-001)".into())));
        assert!(text.iter().any(|(k, v)| k == "Software" && v.starts_with("assetgen ")));
    }

    #[test]
    fn embedding_again_replaces_the_record_instead_of_adding_one() {
        let first = embed(&placeholder(), &sample("first")).expect("embedded");
        let second = embed(&first, &sample("second")).expect("embedded again");
        assert_eq!(read(&second).expect("read").map(|p| p.prompt), Some("second".into()));
        let text = text_chunks(&second).expect("chunks");
        assert_eq!(text.iter().filter(|(k, _)| k == KEYWORD).count(), 1, "{text:?}");
        assert_eq!(text.iter().filter(|(k, _)| k == "Description").count(), 1);
        assert_eq!(pixels(&second), pixels(&first));
    }

    #[test]
    fn a_png_without_provenance_reads_as_none() {
        assert_eq!(read(&placeholder()).expect("read"), None);
    }

    #[test]
    fn what_is_not_a_good_png_is_refused_not_broken() {
        let record = sample("p");
        assert!(matches!(embed(b"GIF89a not a png", &record), Err(PngTextError::NotPng)));
        assert!(matches!(read(b"\xff\xd8\xff\xe0 jpeg"), Err(PngTextError::NotPng)));
        let png = placeholder();
        // Cut inside the image data: the chunk walk or the full decode refuses it.
        let cut = &png[..png.len() - 40];
        assert!(matches!(embed(cut, &record), Err(PngTextError::Malformed(_))), "{:?}", embed(cut, &record).err());
        // A PNG whose image data is corrupt (CRC kept valid would still fail to inflate).
        let mut corrupt = png.clone();
        let idat = corrupt.windows(4).position(|w| w == b"IDAT").expect("IDAT") + 4;
        for b in &mut corrupt[idat..idat + 16] {
            *b ^= 0x5a;
        }
        assert!(embed(&corrupt, &record).is_err(), "a PNG that does not decode is refused");
    }
}
