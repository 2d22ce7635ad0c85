//! Just enough of BTF to follow libxdp's dispatcher protocol: the type id
//! of a function (the slot an extension program replaces) and the version
//! a dispatcher declares in its `xdp_metadata` section.

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// One type: its kind, name and the `size`/`type` word, and where its
/// kind-specific data starts in the type section.
#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u32,
    vlen: u32,
    name_off: u32,
    size_or_type: u32,
    extra: usize,
}

pub struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    /// Index 0 is the void type.
    all: Vec<Type>,
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

impl Btf {
    /// Parses raw BTF (little-endian, as on every BPF target we run on).
    pub fn parse(raw: &[u8]) -> Option<Btf> {
        if u16::from_le_bytes(raw.get(0..2)?.try_into().ok()?) != MAGIC {
            return None;
        }
        let hdr_len = u32_at(raw, 4)? as usize;
        let (type_off, type_len) = (u32_at(raw, 8)? as usize, u32_at(raw, 12)? as usize);
        let (str_off, str_len) = (u32_at(raw, 16)? as usize, u32_at(raw, 20)? as usize);
        let types = raw
            .get(hdr_len + type_off..hdr_len + type_off + type_len)?
            .to_vec();
        let strings = raw
            .get(hdr_len + str_off..hdr_len + str_off + str_len)?
            .to_vec();
        let mut all = vec![Type {
            kind: 0,
            vlen: 0,
            name_off: 0,
            size_or_type: 0,
            extra: 0,
        }];
        let mut o = 0;
        while o + 12 <= types.len() {
            let info = u32_at(&types, o + 4)?;
            let t = Type {
                kind: (info >> 24) & 0x1f,
                vlen: info & 0xffff,
                name_off: u32_at(&types, o)?,
                size_or_type: u32_at(&types, o + 8)?,
                extra: o + 12,
            };
            let more = match t.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * t.vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * t.vlen as usize,
                _ => 0,
            };
            all.push(t);
            o += 12 + more;
        }
        Some(Btf {
            types,
            strings,
            all,
        })
    }

    fn name(&self, t: &Type) -> &str {
        let s = self.strings.get(t.name_off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Type id of the function named `name`.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.all
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t) == name)
            .map(|i| i as u32)
    }

    /// The value a `__uint(name, N)` declaration carries: variable `var`
    /// of section `sec`, a pointer to an array of N elements.
    pub fn declared_uint(&self, sec: &str, var: &str) -> Option<u32> {
        let s = self
            .all
            .iter()
            .find(|t| t.kind == KIND_DATASEC && self.name(t) == sec)?;
        for i in 0..s.vlen as usize {
            let id = u32_at(&self.types, s.extra + i * 12)? as usize;
            let v = self.all.get(id)?;
            if v.kind != KIND_VAR || self.name(v) != var {
                continue;
            }
            let p = self.all.get(v.size_or_type as usize)?;
            if p.kind != KIND_PTR {
                return None;
            }
            let a = self.all.get(p.size_or_type as usize)?;
            if a.kind != KIND_ARRAY {
                return None;
            }
            // struct btf_array { type, index_type, nelems }
            return u32_at(&self.types, a.extra + 8);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTF with: [1] INT, [2] FUNC_PROTO, [3] FUNC "prog0", [4] ARRAY of
    /// 2, [5] PTR to it, [6] VAR "dispatcher_version", [7] DATASEC
    /// "xdp_metadata".
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0prog0\0dispatcher_version\0xdp_metadata\0".to_vec();
        let s = |name: &str| {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut ty = |name: u32, kind: u32, vlen: u32, st: u32, extra: &[u32]| {
            t.extend_from_slice(&name.to_le_bytes());
            t.extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            t.extend_from_slice(&st.to_le_bytes());
            for x in extra {
                t.extend_from_slice(&x.to_le_bytes());
            }
        };
        ty(s("int"), KIND_INT, 0, 4, &[32]);
        ty(0, KIND_FUNC_PROTO, 0, 1, &[]);
        ty(s("prog0"), KIND_FUNC, 1, 2, &[]);
        ty(0, KIND_ARRAY, 0, 0, &[1, 1, 2]);
        ty(0, KIND_PTR, 0, 4, &[]);
        ty(s("dispatcher_version"), KIND_VAR, 0, 5, &[1]);
        ty(s("xdp_metadata"), KIND_DATASEC, 1, 8, &[6, 0, 8]);
        let mut raw = Vec::new();
        raw.extend_from_slice(&MAGIC.to_le_bytes());
        raw.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            raw.extend_from_slice(&v.to_le_bytes());
        }
        raw.extend_from_slice(&t);
        raw.extend_from_slice(&strings);
        raw
    }

    #[test]
    fn finds_functions_and_declared_values() {
        let b = Btf::parse(&sample()).unwrap();
        assert_eq!(b.func_id("prog0"), Some(3));
        assert_eq!(b.func_id("prog1"), None);
        assert_eq!(
            b.declared_uint("xdp_metadata", "dispatcher_version"),
            Some(2)
        );
        assert_eq!(b.declared_uint("xdp_metadata", "other"), None);
        assert!(Btf::parse(&[0; 8]).is_none());
    }

    #[test]
    fn truncated_btf_is_refused() {
        let mut raw = sample();
        raw.truncate(raw.len() - 3);
        assert!(Btf::parse(&raw).is_none());
    }
}
