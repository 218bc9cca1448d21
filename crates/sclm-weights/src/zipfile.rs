//! Minimal zip reader for the archives `torch.save` writes (stored entries, zip64 when large; deflate
//! is accepted too). Reads the central directory, then single entries on demand.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

/// One entry of the central directory.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    method: u16,
    compressed_size: u64,
    size: u64,
    local_header_offset: u64,
}

/// An open zip archive.
pub(crate) struct ZipArchive {
    file: File,
    file_len: u64,
    entries: HashMap<String, Entry>,
    names: Vec<String>,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn read_at(file: &mut File, offset: u64, len: usize) -> Result<Vec<u8>, String> {
    file.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf).map_err(|e| format!("truncated archive ({e})"))?;
    Ok(buf)
}

impl ZipArchive {
    /// Opens an archive and reads its central directory. Errors are plain reasons (the caller adds the path).
    pub(crate) fn open(mut file: File) -> Result<Self, String> {
        let file_len = file.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
        if file_len < 22 {
            return Err("truncated zip archive (no end-of-central-directory record)".into());
        }
        let tail_len = file_len.min(22 + 65_535) as usize;
        let tail_start = file_len - tail_len as u64;
        let tail = read_at(&mut file, tail_start, tail_len)?;
        let eocd_pos = (0..=tail_len - 22)
            .rev()
            .find(|&i| le32(&tail, i) == EOCD_SIG)
            .ok_or("truncated or damaged zip archive (end-of-central-directory record not found)")?;
        let eocd = &tail[eocd_pos..];
        let mut count = le16(eocd, 10) as u64;
        let mut cd_size = le32(eocd, 12) as u64;
        let mut cd_offset = le32(eocd, 16) as u64;
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            // zip64: the locator sits right before the classic record.
            if eocd_pos < 20 {
                return Err("damaged zip64 archive (locator missing)".into());
            }
            let loc = &tail[eocd_pos - 20..eocd_pos];
            if le32(loc, 0) != ZIP64_LOCATOR_SIG {
                return Err("damaged zip64 archive (locator signature)".into());
            }
            let z64_off = le64(loc, 8);
            if z64_off.checked_add(56).is_none_or(|e| e > file_len) {
                return Err("damaged zip64 archive (record offset out of range)".into());
            }
            let rec = read_at(&mut file, z64_off, 56)?;
            if le32(&rec, 0) != ZIP64_EOCD_SIG {
                return Err("damaged zip64 archive (record signature)".into());
            }
            count = le64(&rec, 32);
            cd_size = le64(&rec, 40);
            cd_offset = le64(&rec, 48);
        }
        if cd_offset.checked_add(cd_size).is_none_or(|e| e > file_len) || cd_size > 1 << 32 {
            return Err("damaged zip archive (central directory out of range)".into());
        }
        let cd = read_at(&mut file, cd_offset, cd_size as usize)?;
        let mut entries = HashMap::new();
        let mut names = Vec::new();
        let mut p = 0usize;
        for _ in 0..count {
            if p + 46 > cd.len() || le32(&cd, p) != CENTRAL_SIG {
                return Err("damaged zip archive (central directory entry)".into());
            }
            let method = le16(&cd, p + 10);
            let mut compressed_size = le32(&cd, p + 20) as u64;
            let mut size = le32(&cd, p + 24) as u64;
            let name_len = le16(&cd, p + 28) as usize;
            let extra_len = le16(&cd, p + 30) as usize;
            let comment_len = le16(&cd, p + 32) as usize;
            let mut local_header_offset = le32(&cd, p + 42) as u64;
            let end = p + 46 + name_len + extra_len + comment_len;
            if end > cd.len() {
                return Err("damaged zip archive (central directory entry overruns)".into());
            }
            let name = String::from_utf8_lossy(&cd[p + 46..p + 46 + name_len]).into_owned();
            // zip64 extended information: present fields follow in a fixed order.
            let mut e = p + 46 + name_len;
            let extra_end = e + extra_len;
            while e + 4 <= extra_end {
                let id = le16(&cd, e);
                let len = le16(&cd, e + 2) as usize;
                let body = e + 4;
                if body + len > extra_end {
                    break;
                }
                if id == 0x0001 {
                    let mut q = body;
                    for field in [&mut size, &mut compressed_size, &mut local_header_offset] {
                        if *field == 0xFFFF_FFFF && q + 8 <= body + len {
                            *field = le64(&cd, q);
                            q += 8;
                        }
                    }
                }
                e = body + len;
            }
            names.push(name.clone());
            entries.insert(name, Entry { method, compressed_size, size, local_header_offset });
            p = end;
        }
        Ok(ZipArchive { file, file_len, entries, names })
    }

    /// Entry names in directory order.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether an entry exists.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Reads one entry completely.
    pub(crate) fn read(&mut self, name: &str) -> Result<Vec<u8>, String> {
        let e = self.entries.get(name).ok_or_else(|| format!("archive has no entry '{name}'"))?.clone();
        if e.local_header_offset.checked_add(30).is_none_or(|x| x > self.file_len) {
            return Err(format!("entry '{name}': local header out of range"));
        }
        let h = read_at(&mut self.file, e.local_header_offset, 30)?;
        if le32(&h, 0) != LOCAL_SIG {
            return Err(format!("entry '{name}': bad local header"));
        }
        let data_start = e.local_header_offset + 30 + le16(&h, 26) as u64 + le16(&h, 28) as u64;
        if data_start.checked_add(e.compressed_size).is_none_or(|x| x > self.file_len) {
            return Err(format!("entry '{name}' extends past the end of the file (truncated archive)"));
        }
        let size = usize::try_from(e.size).map_err(|_| format!("entry '{name}' too large"))?;
        match e.method {
            0 => {
                if e.compressed_size != e.size {
                    return Err(format!("entry '{name}': stored sizes disagree"));
                }
                read_at(&mut self.file, data_start, size)
            }
            8 => {
                let raw = read_at(&mut self.file, data_start, e.compressed_size as usize)?;
                let mut out = Vec::with_capacity(size.min(1 << 30));
                flate2::read::DeflateDecoder::new(&raw[..])
                    .take(e.size)
                    .read_to_end(&mut out)
                    .map_err(|err| format!("entry '{name}': deflate data damaged ({err})"))?;
                if out.len() != size {
                    return Err(format!("entry '{name}': inflated size {} differs from {size}", out.len()));
                }
                Ok(out)
            }
            m => Err(format!("entry '{name}': unsupported compression method {m}")),
        }
    }
}
