//! How many bytes an Avro block's records take, walked from the writer schema without building
//! any values. The reader trusts a block's record count: records that take fewer bytes than
//! the block holds left it looping forever on the bytes over, so a block is checked to be
//! exactly its records.

use serde_json::Value;

/// How a value of one schema node is laid out in Avro's binary encoding.
#[derive(Debug, Clone)]
enum Shape {
    Null,
    Boolean,
    /// `int` and `long`: a zigzag variable-length integer; also an enum's symbol index.
    Varint,
    Float,
    Double,
    /// `bytes` and `string`: a length, then that many bytes.
    Sized,
    Fixed(u64),
    Union(Vec<usize>),
    Array(usize),
    Map(usize),
    Record(Vec<usize>),
    /// A named type whose definition is still being read.
    Pending,
}

/// Nesting of values beyond which the walk gives up (the reader is left to it): only a
/// recursive schema nests this deep, and the walk must not overflow the stack on it.
const MAX_DEPTH: usize = 128;

/// Why a walk stopped.
#[derive(Debug, PartialEq)]
pub(super) enum Stop {
    /// The records do not fit the block: what is wrong.
    Corrupt(String),
    /// The walk cannot tell (a schema nested too deep); the reader is left to it.
    GiveUp,
}

/// The writer schema's layout, ready to walk blocks with.
#[derive(Debug)]
pub(super) struct Layout {
    shapes: Vec<Shape>,
    /// Whether a node's values always take no bytes at all.
    empty: Vec<bool>,
    root: usize,
}

impl Layout {
    /// The layout of a writer schema (the `avro.schema` header entry); `None` when the schema
    /// is not one this walk understands, which the reader then reports itself.
    pub(super) fn parse(schema: &[u8]) -> Option<Layout> {
        let json: Value = serde_json::from_slice(schema).ok()?;
        let mut parser = Parser {
            shapes: Vec::new(),
            names: Vec::new(),
        };
        let root = parser.node(&json, "", 0)?;
        let shapes = parser.shapes;
        if shapes.iter().any(|s| matches!(s, Shape::Pending)) {
            return None;
        }
        // Least fixed point: a record is empty when all its fields are.
        let mut empty: Vec<bool> = shapes
            .iter()
            .map(|s| matches!(s, Shape::Null | Shape::Fixed(0)))
            .collect();
        loop {
            let mut changed = false;
            for (i, shape) in shapes.iter().enumerate() {
                if let Shape::Record(fields) = shape
                    && !empty[i]
                    && fields.iter().all(|&f| empty[f])
                {
                    empty[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Some(Layout {
            shapes,
            empty,
            root,
        })
    }

    /// Checks that `count` records take exactly the bytes of `block`.
    pub(super) fn check_block(&self, block: &[u8], count: u64) -> Result<(), Stop> {
        let mut walk = Walk { data: block, at: 0 };
        if !self.empty[self.root] {
            for _ in 0..count {
                self.skip(self.root, &mut walk, 0)?;
            }
        }
        if walk.at < block.len() {
            return Err(Stop::Corrupt(format!(
                "its {count} records take {} of its {} bytes",
                walk.at,
                block.len()
            )));
        }
        Ok(())
    }

    fn skip(&self, node: usize, walk: &mut Walk, depth: usize) -> Result<(), Stop> {
        if depth > MAX_DEPTH {
            return Err(Stop::GiveUp);
        }
        match &self.shapes[node] {
            Shape::Null | Shape::Pending => Ok(()),
            Shape::Boolean => walk.advance(1),
            Shape::Varint => walk.long().map(drop),
            Shape::Float => walk.advance(4),
            Shape::Double => walk.advance(8),
            Shape::Sized => {
                let length = walk.long()?;
                let length = u64::try_from(length)
                    .map_err(|_| Stop::Corrupt(format!("a negative length {length}")))?;
                walk.advance(length)
            }
            Shape::Fixed(size) => walk.advance(*size),
            Shape::Union(branches) => {
                let index = walk.long()?;
                let branch = usize::try_from(index)
                    .ok()
                    .and_then(|i| branches.get(i))
                    .ok_or_else(|| {
                        Stop::Corrupt(format!(
                            "a union branch {index} of {} branches",
                            branches.len()
                        ))
                    })?;
                self.skip(*branch, walk, depth + 1)
            }
            Shape::Array(items) => self.skip_blocks(&[*items], walk, depth),
            Shape::Map(values) => self.skip_blocks(&[usize::MAX, *values], walk, depth),
            Shape::Record(fields) => {
                for &field in fields {
                    self.skip(field, walk, depth + 1)?;
                }
                Ok(())
            }
        }
    }

    /// The blocks of an array's items or a map's entries (`usize::MAX` stands for a map key).
    fn skip_blocks(&self, entry: &[usize], walk: &mut Walk, depth: usize) -> Result<(), Stop> {
        let empty = entry.iter().all(|&n| n != usize::MAX && self.empty[n]);
        loop {
            let count = walk.long()?;
            if count == 0 {
                return Ok(());
            }
            // A negative count is followed by the block's size in bytes, which must agree
            // with its items: a reader may skip by either.
            let size = if count < 0 { Some(walk.long()?) } else { None };
            let start = walk.at;
            if !empty {
                for _ in 0..count.unsigned_abs() {
                    for &n in entry {
                        if n == usize::MAX {
                            self.skip_sized(walk)?;
                        } else {
                            self.skip(n, walk, depth + 1)?;
                        }
                    }
                }
            }
            if let Some(size) = size
                && i64::try_from(walk.at - start).ok() != Some(size)
            {
                return Err(Stop::Corrupt(format!(
                    "an array or map block says {size} bytes but its items take {}",
                    walk.at - start
                )));
            }
        }
    }

    fn skip_sized(&self, walk: &mut Walk) -> Result<(), Stop> {
        let length = walk.long()?;
        let length = u64::try_from(length)
            .map_err(|_| Stop::Corrupt(format!("a negative length {length}")))?;
        walk.advance(length)
    }
}

/// A position in a block's bytes.
struct Walk<'a> {
    data: &'a [u8],
    at: usize,
}

impl Walk<'_> {
    fn advance(&mut self, n: u64) -> Result<(), Stop> {
        match usize::try_from(n)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&end| end <= self.data.len())
        {
            Some(end) => {
                self.at = end;
                Ok(())
            }
            None => Err(self.overrun()),
        }
    }

    fn overrun(&self) -> Stop {
        Stop::Corrupt(format!(
            "its records run past its {} bytes",
            self.data.len()
        ))
    }

    fn long(&mut self) -> Result<i64, Stop> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.data.get(self.at).ok_or_else(|| self.overrun())?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(Stop::Corrupt(format!(
            "an integer longer than 10 bytes at byte {}",
            self.at
        )))
    }
}

/// Reads a schema's JSON into shapes, resolving named types by their full names.
struct Parser {
    shapes: Vec<Shape>,
    /// Full names of named types (records, enums, fixed) and their nodes.
    names: Vec<(String, usize)>,
}

impl Parser {
    fn add(&mut self, shape: Shape) -> usize {
        self.shapes.push(shape);
        self.shapes.len() - 1
    }

    fn node(&mut self, json: &Value, namespace: &str, depth: usize) -> Option<usize> {
        if depth > MAX_DEPTH {
            return None;
        }
        match json {
            Value::String(name) => self.named(name, namespace),
            Value::Array(branches) => {
                let branches = branches
                    .iter()
                    .map(|b| self.node(b, namespace, depth + 1))
                    .collect::<Option<Vec<_>>>()?;
                Some(self.add(Shape::Union(branches)))
            }
            Value::Object(object) => {
                let kind = object.get("type")?;
                let Value::String(kind) = kind else {
                    // `{"type": {...}}` or `{"type": [...]}`: the inner schema.
                    return self.node(kind, namespace, depth + 1);
                };
                match kind.as_str() {
                    "record" | "error" => {
                        let (full, inner) = full_name(object, namespace)?;
                        let node = self.add(Shape::Pending);
                        self.names.push((full, node));
                        let fields = object.get("fields")?.as_array()?;
                        let fields = fields
                            .iter()
                            .map(|f| self.node(f.get("type")?, &inner, depth + 1))
                            .collect::<Option<Vec<_>>>()?;
                        self.shapes[node] = Shape::Record(fields);
                        Some(node)
                    }
                    "enum" => {
                        let (full, _) = full_name(object, namespace)?;
                        let node = self.add(Shape::Varint);
                        self.names.push((full, node));
                        Some(node)
                    }
                    "fixed" => {
                        let (full, _) = full_name(object, namespace)?;
                        let size = object.get("size")?.as_u64()?;
                        let node = self.add(Shape::Fixed(size));
                        self.names.push((full, node));
                        Some(node)
                    }
                    "array" => {
                        let items = self.node(object.get("items")?, namespace, depth + 1)?;
                        Some(self.add(Shape::Array(items)))
                    }
                    "map" => {
                        let values = self.node(object.get("values")?, namespace, depth + 1)?;
                        Some(self.add(Shape::Map(values)))
                    }
                    // A primitive, perhaps with a logical type.
                    other => self.named(other, namespace),
                }
            }
            _ => None,
        }
    }

    fn named(&mut self, name: &str, namespace: &str) -> Option<usize> {
        let primitive = match name {
            "null" => Some(Shape::Null),
            "boolean" => Some(Shape::Boolean),
            "int" | "long" => Some(Shape::Varint),
            "float" => Some(Shape::Float),
            "double" => Some(Shape::Double),
            "bytes" | "string" => Some(Shape::Sized),
            _ => None,
        };
        if let Some(shape) = primitive {
            return Some(self.add(shape));
        }
        let qualified = if name.contains('.') || namespace.is_empty() {
            name.to_string()
        } else {
            format!("{namespace}.{name}")
        };
        let find = |wanted: &str| {
            self.names
                .iter()
                .find(|(full, _)| full == wanted)
                .map(|(_, n)| *n)
        };
        find(&qualified).or_else(|| find(name))
    }
}

/// A named type's full name, and the namespace its inner definitions default to.
fn full_name(object: &serde_json::Map<String, Value>, enclosing: &str) -> Option<(String, String)> {
    let name = object.get("name")?.as_str()?;
    if let Some((space, _)) = name.rsplit_once('.') {
        return Some((name.to_string(), space.to_string()));
    }
    let space = match object.get("namespace").and_then(Value::as_str) {
        Some(space) => space,
        None => enclosing,
    };
    let full = if space.is_empty() {
        name.to_string()
    } else {
        format!("{space}.{name}")
    };
    Some((full, space.to_string()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An Avro `long` as written: zigzag, then seven bits a byte.
    pub(in crate::dataset) fn long(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    fn string(s: &str) -> Vec<u8> {
        let mut out = long(s.len() as i64);
        out.extend(s.as_bytes());
        out
    }

    const PERSON: &str = r#"{"type":"record","name":"person","namespace":"ns","fields":[
        {"name":"id","type":"long"},
        {"name":"name","type":["null","string"]},
        {"name":"score","type":{"type":"bytes","logicalType":"decimal","precision":9,"scale":2}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":"double"}},
        {"name":"kind","type":{"type":"enum","name":"kind","symbols":["a","b"]}},
        {"name":"again","type":"ns.kind"},
        {"name":"hash","type":{"type":"fixed","name":"h","size":4}},
        {"name":"day","type":{"type":"int","logicalType":"date"}},
        {"name":"ok","type":"boolean"},
        {"name":"f","type":"float"}
    ]}"#;

    fn person(id: i64, name: Option<&str>, tags: &[&str]) -> Vec<u8> {
        let mut r = long(id);
        match name {
            None => r.extend(long(0)),
            Some(n) => {
                r.extend(long(1));
                r.extend(string(n));
            }
        }
        r.extend(long(2));
        r.extend([0x01, 0x02]);
        if !tags.is_empty() {
            r.extend(long(tags.len() as i64));
            for t in tags {
                r.extend(string(t));
            }
        }
        r.extend(long(0));
        // One map block given with its size, as writers that allow skipping do.
        let mut entry = string("k");
        entry.extend(1.5f64.to_le_bytes());
        r.extend(long(-1));
        r.extend(long(entry.len() as i64));
        r.extend(entry);
        r.extend(long(0));
        r.extend(long(1));
        r.extend(long(0));
        r.extend(*b"abcd");
        r.extend(long(19000));
        r.push(1);
        r.extend(2.5f32.to_le_bytes());
        r
    }

    #[test]
    fn records_that_fill_their_block_pass() {
        let layout = Layout::parse(PERSON.as_bytes()).unwrap();
        let mut block = person(1, Some("ann"), &["x", "yz"]);
        block.extend(person(-7, None, &[]));
        assert_eq!(layout.check_block(&block, 2), Ok(()));
        assert_eq!(layout.check_block(&[], 0), Ok(()));
    }

    #[test]
    fn bytes_left_over_or_missing_are_corrupt() {
        let layout = Layout::parse(PERSON.as_bytes()).unwrap();
        let mut block = person(1, Some("ann"), &["x"]);
        let one = block.len();
        block.extend(person(2, None, &[]));
        let Err(Stop::Corrupt(why)) = layout.check_block(&block, 1) else {
            panic!("left-over bytes passed");
        };
        assert_eq!(
            why,
            format!("its 1 records take {one} of its {} bytes", block.len())
        );
        let Err(Stop::Corrupt(why)) = layout.check_block(&block, 3) else {
            panic!("a missing record passed");
        };
        assert!(why.contains("run past"), "{why}");
    }

    #[test]
    fn bad_union_branches_and_block_sizes_are_corrupt() {
        let layout = Layout::parse(br#"["null","long"]"#).unwrap();
        assert_eq!(layout.check_block(&[2, 4], 1), Ok(()));
        assert!(matches!(layout.check_block(&[4], 1), Err(Stop::Corrupt(_))));

        let layout = Layout::parse(br#"{"type":"array","items":"long"}"#).unwrap();
        // A block of two items said to be 3 bytes long; they take 2.
        let mut block = long(-2);
        block.extend(long(3));
        block.extend([2, 4, 0]);
        let Err(Stop::Corrupt(why)) = layout.check_block(&block, 1) else {
            panic!("a wrong block size passed");
        };
        assert!(why.contains("says 3 bytes"), "{why}");
    }

    #[test]
    fn empty_records_and_recursive_schemas() {
        // Records that take no bytes: any count fits no bytes, and none fit one.
        let layout = Layout::parse(br#"{"type":"record","name":"r","fields":[]}"#).unwrap();
        assert_eq!(layout.check_block(&[], u64::MAX), Ok(()));
        assert!(layout.check_block(b"x", 5).is_err());
        // A linked list: walked as deep as the data goes, then left to the reader.
        let list = br#"{"type":"record","name":"node","fields":[
            {"name":"v","type":"long"},{"name":"next","type":["null","node"]}]}"#;
        let layout = Layout::parse(list).unwrap();
        assert_eq!(layout.check_block(&[2, 2, 4, 0], 1), Ok(()));
        let deep: Vec<u8> = std::iter::repeat_n([2u8, 2], 1000).flatten().collect();
        assert_eq!(layout.check_block(&deep, 1), Err(Stop::GiveUp));
        // Names it cannot resolve, and schemas that are not JSON, are the reader's to report.
        assert!(
            Layout::parse(br#"{"type":"record","name":"r","fields":[{"name":"a","type":"nope"}]}"#)
                .is_none()
        );
        assert!(Layout::parse(b"{").is_none());
    }
}
