//! A minimal, side-effect-free pickle interpreter for what `torch.save` writes.
//!
//! It understands the opcodes of protocols 0–5 that plain data uses (no out-of-band buffers) and
//! reconstructs a few known callables — `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//! `torch._utils._rebuild_parameter`, `torch.Size`, `builtins.set` — into data. Any other class or
//! function becomes an opaque [`PyValue::Object`]; nothing is ever executed or imported. Storages are
//! resolved through PyTorch's `persistent_load` convention (`('storage', type, key, location, numel, ...)`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::tensor::DType;

/// A reference to one storage of the checkpoint (a flat buffer of `numel` elements of `dtype`).
#[derive(Debug, Clone, PartialEq)]
pub struct StorageRef {
    /// Storage key (the file name under `data/` in the zip format).
    pub key: String,
    /// Element type.
    pub dtype: DType,
    /// Number of elements the pickle declares.
    pub numel: usize,
}

/// A tensor as the pickle describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRef {
    /// The storage holding the values.
    pub storage: StorageRef,
    /// Offset of the first element, in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// A Python value reconstructed from a pickle.
#[derive(Debug, Clone, PartialEq)]
pub enum PyValue {
    /// `None`.
    None,
    /// `bool`.
    Bool(bool),
    /// An `int` that fits in 64 bits.
    Int(i64),
    /// A larger `int`, as little-endian two's-complement bytes.
    BigInt(Vec<u8>),
    /// `float`.
    Float(f64),
    /// `str`.
    Str(String),
    /// `bytes` / `bytearray`.
    Bytes(Vec<u8>),
    /// `tuple`.
    Tuple(Vec<PyValue>),
    /// `list` (also `set` / `frozenset`).
    List(Vec<PyValue>),
    /// `dict` / `OrderedDict`, in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
    /// A reference to a global (`module.name`) that was not called.
    Global {
        /// Module.
        module: String,
        /// Name.
        name: String,
    },
    /// An instance of a class this reader does not interpret.
    Object {
        /// `module.name` of the class or factory.
        class: String,
        /// Constructor arguments.
        args: Box<PyValue>,
        /// State set by `__setstate__` (BUILD), if any.
        state: Option<Box<PyValue>>,
    },
    /// A storage (from `persistent_load`).
    Storage(StorageRef),
    /// A tensor (from `_rebuild_tensor_v2`).
    Tensor(TensorRef),
}

impl PyValue {
    /// Looks a string key up in a dict.
    pub fn get(&self, key: &str) -> Option<&PyValue> {
        match self {
            PyValue::Dict(items) => {
                items.iter().find(|(k, _)| matches!(k, PyValue::Str(s) if s == key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Short description of the value's kind, for error messages.
    pub fn kind(&self) -> String {
        match self {
            PyValue::None => "None".into(),
            PyValue::Bool(_) => "bool".into(),
            PyValue::Int(_) | PyValue::BigInt(_) => "int".into(),
            PyValue::Float(_) => "float".into(),
            PyValue::Str(_) => "str".into(),
            PyValue::Bytes(_) => "bytes".into(),
            PyValue::Tuple(_) => "tuple".into(),
            PyValue::List(_) => "list".into(),
            PyValue::Dict(_) => "dict".into(),
            PyValue::Global { module, name } => format!("global {module}.{name}"),
            PyValue::Object { class, .. } => format!("object {class}"),
            PyValue::Storage(_) => "storage".into(),
            PyValue::Tensor(_) => "tensor".into(),
        }
    }

    /// A string rendering of a dict key (strings as is, integers in decimal).
    pub fn key_string(&self) -> Option<String> {
        match self {
            PyValue::Str(s) => Some(s.clone()),
            PyValue::Int(i) => Some(i.to_string()),
            PyValue::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
            _ => None,
        }
    }
}

/// A pickle decoding error: byte offset and reason.
#[derive(Debug, Clone)]
pub struct PickleError {
    /// Offset in the stream.
    pub offset: usize,
    /// What went wrong.
    pub reason: String,
}

type PResult<T> = std::result::Result<T, PickleError>;

/// Interpreter-internal value: containers are shared so that memoised references see later mutations.
#[derive(Debug, Clone)]
enum V {
    Mark,
    Plain(PyValue),
    List(Rc<RefCell<Vec<V>>>),
    Tuple(Rc<Vec<V>>),
    Dict(Rc<RefCell<Vec<(V, V)>>>),
    Obj(Rc<RefCell<Obj>>),
}

/// Dropping uses an explicit work list: a hostile pickle can nest containers a million levels deep,
/// and the default recursive drop would overflow the stack.
impl Drop for V {
    fn drop(&mut self) {
        let mut work: Vec<V> = Vec::new();
        take_children(self, &mut work);
        while let Some(mut v) = work.pop() {
            take_children(&mut v, &mut work);
        }
    }
}

/// Moves the children of `v` into `work` when `v` is their only owner.
fn take_children(v: &mut V, work: &mut Vec<V>) {
    match v {
        V::List(l) => {
            if let Some(cell) = Rc::get_mut(l) {
                work.append(cell.get_mut());
            }
        }
        V::Tuple(t) => {
            if let Some(items) = Rc::get_mut(t) {
                work.append(items);
            }
        }
        V::Dict(d) => {
            if let Some(cell) = Rc::get_mut(d) {
                for (k, x) in cell.get_mut().drain(..) {
                    work.push(k);
                    work.push(x);
                }
            }
        }
        V::Obj(o) => {
            if let Some(cell) = Rc::get_mut(o) {
                let o = cell.get_mut();
                work.push(std::mem::replace(&mut o.args, V::Mark));
                if let Some(s) = o.state.take() {
                    work.push(s);
                }
                for (k, x) in o.items.drain(..) {
                    work.push(k);
                    work.push(x);
                }
                work.append(&mut o.list);
            }
        }
        V::Mark | V::Plain(_) => {}
    }
}

#[derive(Debug)]
struct Obj {
    class: String,
    args: V,
    state: Option<V>,
    items: Vec<(V, V)>,
    list: Vec<V>,
}

const MAX_DEPTH: usize = 200;
/// Upper bound on values produced when unfolding shared references (guards against "billion laughs").
const MAX_NODES: usize = 2_000_000;

fn budget() -> usize {
    MAX_NODES
}

/// Decodes one pickle from `data` starting at `*pos`; advances `*pos` past the STOP opcode.
/// `persistent_load` turns a persistent id into a value (PyTorch storages).
pub fn load(
    data: &[u8],
    pos: &mut usize,
    persistent_load: &mut dyn FnMut(&PyValue) -> std::result::Result<PyValue, String>,
) -> PResult<PyValue> {
    let mut m = Machine { data, pos: *pos, stack: Vec::new(), memo: HashMap::new(), op_start: *pos };
    let out = m.run(persistent_load)?;
    *pos = m.pos;
    let v = freeze(&out, 0, &mut budget()).map_err(|reason| PickleError { offset: m.op_start, reason })?;
    Ok(v)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<V>,
    memo: HashMap<u64, V>,
    op_start: usize,
}

impl<'a> Machine<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(PickleError { offset: self.op_start, reason: reason.into() })
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(e) if e <= self.data.len() => e,
            _ => return self.err(format!("unexpected end of data (wanted {n} bytes)")),
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> PResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> PResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> PResult<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len_u64(&mut self) -> PResult<usize> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }

    fn line(&mut self) -> PResult<&'a [u8]> {
        let rest = &self.data[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => self.err("unterminated text line"),
        }
    }

    fn line_str(&mut self) -> PResult<String> {
        let l = self.line()?;
        match std::str::from_utf8(l) {
            Ok(s) => Ok(s.trim_end_matches('\r').to_string()),
            Err(_) => self.err("text line is not UTF-8"),
        }
    }

    fn utf8(&self, b: &[u8]) -> PResult<String> {
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => self.err("string is not valid UTF-8"),
        }
    }

    fn pop(&mut self) -> PResult<V> {
        match self.stack.pop() {
            Some(V::Mark) => self.err("stack underflow (hit a MARK)"),
            Some(v) => Ok(v),
            None => self.err("stack underflow"),
        }
    }

    fn top_mut(&mut self) -> PResult<&mut V> {
        match self.stack.last_mut() {
            Some(V::Mark) | None => Err(PickleError { offset: self.op_start, reason: "stack underflow".into() }),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self) -> PResult<Vec<V>> {
        match self.stack.iter().rposition(|v| matches!(v, V::Mark)) {
            Some(i) => {
                let items = self.stack.split_off(i + 1);
                self.stack.pop();
                Ok(items)
            }
            None => self.err("no MARK on the stack"),
        }
    }

    fn push(&mut self, v: PyValue) {
        self.stack.push(V::Plain(v));
    }

    fn memo_put(&mut self, idx: u64) -> PResult<()> {
        let v = self.top_mut()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u64) -> PResult<()> {
        match self.memo.get(&idx) {
            Some(v) => {
                let v = v.clone();
                self.stack.push(v);
                Ok(())
            }
            None => self.err(format!("memo entry {idx} is not defined")),
        }
    }

    fn run(&mut self, pl: &mut dyn FnMut(&PyValue) -> std::result::Result<PyValue, String>) -> PResult<V> {
        loop {
            self.op_start = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return self.err(format!("unsupported pickle protocol {p}"));
                    }
                }
                0x95 => {
                    // FRAME: length of the next frame; frames are contiguous in the stream.
                    self.u64()?;
                }
                b'.' => {
                    // STOP
                    return self.pop();
                }
                b'(' => self.stack.push(V::Mark),
                b'}' => self.stack.push(V::Dict(Rc::new(RefCell::new(Vec::new())))),
                b']' => self.stack.push(V::List(Rc::new(RefCell::new(Vec::new())))),
                b')' => self.stack.push(V::Tuple(Rc::new(Vec::new()))),
                0x8f => self.stack.push(V::List(Rc::new(RefCell::new(Vec::new())))), // EMPTY_SET
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::Tuple(Rc::new(items)));
                }
                0x85 => {
                    let a = self.pop()?;
                    self.stack.push(V::Tuple(Rc::new(vec![a])));
                }
                0x86 => {
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(V::Tuple(Rc::new(vec![a, b])));
                }
                0x87 => {
                    let c = self.pop()?;
                    let b = self.pop()?;
                    let a = self.pop()?;
                    self.stack.push(V::Tuple(Rc::new(vec![a, b, c])));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(V::List(Rc::new(RefCell::new(items))));
                }
                0x91 => {
                    // FROZENSET
                    let items = self.pop_mark()?;
                    self.stack.push(V::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.stack.push(V::Dict(Rc::new(RefCell::new(pairs))));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![(k, v)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let pairs = self.pairs(items)?;
                    self.set_items(pairs)?;
                }
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    // APPENDS, ADDITEMS
                    let items = self.pop_mark()?;
                    self.append(items)?;
                }
                b'J' => {
                    let b = self.take(4)?;
                    self.push(PyValue::Int(i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(PyValue::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(PyValue::Int(v as i64));
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    self.push(long_from_bytes(b));
                }
                0x8b => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    self.push(long_from_bytes(b));
                }
                b'I' => {
                    let s = self.line_str()?;
                    let v = match s.as_str() {
                        "00" => PyValue::Bool(false),
                        "01" => PyValue::Bool(true),
                        _ => match s.parse::<i64>() {
                            Ok(i) => PyValue::Int(i),
                            Err(_) => return self.err(format!("bad INT literal '{s}'")),
                        },
                    };
                    self.push(v);
                }
                b'L' => {
                    let s = self.line_str()?;
                    match s.trim_end_matches('L').parse::<i64>() {
                        Ok(i) => self.push(PyValue::Int(i)),
                        Err(_) => return self.err(format!("unsupported LONG literal '{s}'")),
                    }
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(PyValue::Float(f64::from_be_bytes(a)));
                }
                b'F' => {
                    let s = self.line_str()?;
                    match s.parse::<f64>() {
                        Ok(f) => self.push(PyValue::Float(f)),
                        Err(_) => return self.err(format!("bad FLOAT literal '{s}'")),
                    }
                }
                b'N' => self.push(PyValue::None),
                0x88 => self.push(PyValue::Bool(true)),
                0x89 => self.push(PyValue::Bool(false)),
                b'X' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(PyValue::Str(s));
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(PyValue::Str(s));
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let b = self.take(n)?;
                    let s = self.utf8(b)?;
                    self.push(PyValue::Str(s));
                }
                b'V' => {
                    let s = self.line_str()?;
                    self.push(PyValue::Str(s));
                }
                b'T' | b'B' => {
                    // BINSTRING (python 2 str, kept as bytes), BINBYTES
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(PyValue::Bytes(b));
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push(PyValue::Bytes(b));
                }
                0x8e | 0x96 => {
                    // BINBYTES8, BYTEARRAY8
                    let n = self.len_u64()?;
                    let b = self.take(n)?.to_vec();
                    self.push(PyValue::Bytes(b));
                }
                b'q' => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?;
                }
                b'p' => {
                    let s = self.line_str()?;
                    match s.parse::<u64>() {
                        Ok(i) => self.memo_put(i)?,
                        Err(_) => return self.err(format!("bad PUT index '{s}'")),
                    }
                }
                0x94 => {
                    // MEMOIZE
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as u64;
                    self.memo_get(i)?;
                }
                b'g' => {
                    let s = self.line_str()?;
                    match s.parse::<u64>() {
                        Ok(i) => self.memo_get(i)?,
                        Err(_) => return self.err(format!("bad GET index '{s}'")),
                    }
                }
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    self.push(PyValue::Global { module, name });
                }
                0x93 => {
                    // STACK_GLOBAL
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (V::Plain(PyValue::Str(module)), V::Plain(PyValue::Str(name))) => {
                            let (module, name) = (module.clone(), name.clone());
                            self.push(PyValue::Global { module, name })
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.call(func, args)?;
                    self.stack.push(v);
                }
                0x81 => {
                    // NEWOBJ
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.stack.push(v);
                }
                0x92 => {
                    // NEWOBJ_EX
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = self.call(cls, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: state for the object below; only opaque objects keep it.
                    let state = self.pop()?;
                    if let V::Obj(o) = self.top_mut()? {
                        o.borrow_mut().state = Some(state);
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let pid = freeze(&pid, 0, &mut budget())
                        .map_err(|reason| PickleError { offset: self.op_start, reason })?;
                    match pl(&pid) {
                        Ok(v) => self.push(v),
                        Err(e) => return self.err(e),
                    }
                }
                b'P' => {
                    let s = self.line_str()?;
                    match pl(&PyValue::Str(s)) {
                        Ok(v) => self.push(v),
                        Err(e) => return self.err(e),
                    }
                }
                b'0' => {
                    self.stack.pop();
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top_mut()?.clone();
                    self.stack.push(v);
                }
                0x97 | 0x98 => return self.err("out-of-band pickle buffers are not supported"),
                b'S' => return self.err("protocol-0 quoted strings (STRING) are not supported"),
                b'i' | b'o' => return self.err("protocol-0 INST/OBJ opcodes are not supported"),
                b'x' | b'y' | b'z' | b'\x82' | b'\x83' | b'\x84' => {
                    return self.err("copyreg extension opcodes are not supported")
                }
                other => return self.err(format!("unknown opcode 0x{other:02x}")),
            }
        }
    }

    fn pairs(&self, items: Vec<V>) -> PResult<Vec<(V, V)>> {
        if !items.len().is_multiple_of(2) {
            return self.err("odd number of items for a dict");
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn set_items(&mut self, pairs: Vec<(V, V)>) -> PResult<()> {
        let offset = self.op_start;
        match self.top_mut()? {
            V::Dict(d) => {
                d.borrow_mut().extend(pairs);
                Ok(())
            }
            V::Obj(o) => {
                o.borrow_mut().items.extend(pairs);
                Ok(())
            }
            _ => Err(PickleError { offset, reason: "SETITEM(S) on a value that is not a dict".into() }),
        }
    }

    fn append(&mut self, items: Vec<V>) -> PResult<()> {
        let offset = self.op_start;
        match self.top_mut()? {
            V::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            V::Obj(o) => {
                o.borrow_mut().list.extend(items);
                Ok(())
            }
            _ => Err(PickleError { offset, reason: "APPEND(S) on a value that is not a list".into() }),
        }
    }

    /// REDUCE / NEWOBJ: known callables become data, everything else an opaque object.
    fn call(&self, func: V, args: V) -> PResult<V> {
        let (module, name) = match &func {
            V::Plain(PyValue::Global { module, name }) => (module.as_str(), name.as_str()),
            _ => return self.err("REDUCE on a value that is not a global"),
        };
        let argv: Vec<V> = match &args {
            V::Tuple(t) => t.as_ref().clone(),
            _ => return self.err(format!("arguments of {module}.{name} are not a tuple")),
        };
        let frozen =
            |v: &V| freeze(v, 0, &mut budget()).map_err(|reason| PickleError { offset: self.op_start, reason });
        match (module, name) {
            ("collections", "OrderedDict")
            | ("builtins", "dict")
            | ("__builtin__", "dict")
            | ("collections", "defaultdict") => {
                let mut pairs = Vec::new();
                if module == "collections" && name == "OrderedDict" {
                    if let Some(V::List(l)) = argv.first() {
                        for item in l.borrow().iter() {
                            match item {
                                V::Tuple(t) if t.len() == 2 => pairs.push((t[0].clone(), t[1].clone())),
                                V::List(p) if p.borrow().len() == 2 => {
                                    let p = p.borrow();
                                    pairs.push((p[0].clone(), p[1].clone()))
                                }
                                _ => return self.err("OrderedDict argument is not a list of pairs"),
                            }
                        }
                    }
                }
                Ok(V::Dict(Rc::new(RefCell::new(pairs))))
            }
            ("builtins", "set") | ("builtins", "frozenset") | ("__builtin__", "set") | ("__builtin__", "frozenset") => {
                let items = match argv.first() {
                    Some(V::List(l)) => l.borrow().clone(),
                    Some(V::Tuple(t)) => t.as_ref().clone(),
                    _ => Vec::new(),
                };
                Ok(V::List(Rc::new(RefCell::new(items))))
            }
            ("torch", "Size") => match argv.first() {
                Some(V::Tuple(t)) => Ok(V::Tuple(t.clone())),
                Some(V::List(l)) => Ok(V::Tuple(Rc::new(l.borrow().clone()))),
                _ => self.err("torch.Size argument is not a tuple"),
            },
            ("_codecs", "encode") => match argv.first().map(frozen).transpose()? {
                // Python 2 byte strings pickled by Python 3: each char is one byte (latin-1).
                Some(PyValue::Str(s)) => Ok(V::Plain(PyValue::Bytes(s.chars().map(|c| c as u32 as u8).collect()))),
                _ => self.err("_codecs.encode argument is not a string"),
            },
            ("torch._utils", "_rebuild_tensor_v2") | ("torch._utils", "_rebuild_tensor") => {
                if argv.len() < 4 {
                    return self.err(format!("{name} needs at least 4 arguments, got {}", argv.len()));
                }
                let storage = match frozen(&argv[0])? {
                    PyValue::Storage(s) => s,
                    other => return self.err(format!("{name}: first argument is {} not a storage", other.kind())),
                };
                let offset = self.as_usize(&frozen(&argv[1])?, "storage offset")?;
                let shape = self.usize_tuple(&frozen(&argv[2])?, "size")?;
                let stride = self.usize_tuple(&frozen(&argv[3])?, "stride")?;
                if shape.len() != stride.len() {
                    return self.err(format!("tensor size {shape:?} and stride {stride:?} differ in rank"));
                }
                Ok(V::Plain(PyValue::Tensor(TensorRef { storage, offset, shape, stride })))
            }
            ("torch._utils", "_rebuild_parameter") | ("torch._utils", "_rebuild_parameter_with_state") => {
                match argv.into_iter().next() {
                    Some(v) => Ok(v),
                    None => self.err(format!("{name} without arguments")),
                }
            }
            _ => Ok(V::Obj(Rc::new(RefCell::new(Obj {
                class: format!("{module}.{name}"),
                args,
                state: None,
                items: Vec::new(),
                list: Vec::new(),
            })))),
        }
    }

    fn as_usize(&self, v: &PyValue, what: &str) -> PResult<usize> {
        match v {
            PyValue::Int(i) if *i >= 0 => usize::try_from(*i).or_else(|_| self.err(format!("{what} too large"))),
            other => self.err(format!("{what} must be a non-negative int, got {}", other.kind())),
        }
    }

    fn usize_tuple(&self, v: &PyValue, what: &str) -> PResult<Vec<usize>> {
        match v {
            PyValue::Tuple(items) | PyValue::List(items) => items.iter().map(|x| self.as_usize(x, what)).collect(),
            other => self.err(format!("tensor {what} must be a tuple, got {}", other.kind())),
        }
    }
}

fn long_from_bytes(b: &[u8]) -> PyValue {
    if b.is_empty() {
        return PyValue::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = if neg { [0xffu8; 8] } else { [0u8; 8] };
        a[..b.len()].copy_from_slice(b);
        PyValue::Int(i64::from_le_bytes(a))
    } else {
        PyValue::BigInt(b.to_vec())
    }
}

/// Converts an interpreter value into an immutable [`PyValue`]; fails on cycles or absurd nesting.
fn freeze(v: &V, depth: usize, budget: &mut usize) -> std::result::Result<PyValue, String> {
    if depth > MAX_DEPTH {
        return Err("object nesting too deep (or cyclic)".into());
    }
    if *budget == 0 {
        return Err("object too large (too many shared references)".into());
    }
    *budget -= 1;
    let d = depth + 1;
    Ok(match v {
        V::Mark => return Err("MARK left inside an object".into()),
        V::Plain(p) => p.clone(),
        V::Tuple(t) => PyValue::Tuple(t.iter().map(|x| freeze(x, d, budget)).collect::<Result<_, _>>()?),
        V::List(l) => PyValue::List(l.borrow().iter().map(|x| freeze(x, d, budget)).collect::<Result<_, _>>()?),
        V::Dict(m) => PyValue::Dict(
            m.borrow()
                .iter()
                .map(|(k, x)| Ok((freeze(k, d, budget)?, freeze(x, d, budget)?)))
                .collect::<Result<_, String>>()?,
        ),
        V::Obj(o) => {
            let o = o.borrow();
            let mut state = match &o.state {
                Some(s) => Some(Box::new(freeze(s, d, budget)?)),
                None => None,
            };
            if !o.items.is_empty() || !o.list.is_empty() {
                // Items added to a dict or list subclass: keep them as the state.
                let items = o
                    .items
                    .iter()
                    .map(|(k, x)| Ok((freeze(k, d, budget)?, freeze(x, d, budget)?)))
                    .collect::<Result<Vec<_>, String>>()?;
                let list = o.list.iter().map(|x| freeze(x, d, budget)).collect::<Result<Vec<_>, _>>()?;
                let extra = PyValue::Tuple(vec![PyValue::Dict(items), PyValue::List(list)]);
                state = Some(Box::new(match state {
                    Some(s) => PyValue::Tuple(vec![*s, extra]),
                    None => extra,
                }));
            }
            PyValue::Object { class: o.class.clone(), args: Box::new(freeze(&o.args, d, budget)?), state }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_pl(_: &PyValue) -> std::result::Result<PyValue, String> {
        Err("no persistent ids here".into())
    }

    fn load_all(data: &[u8]) -> PResult<PyValue> {
        let mut pos = 0;
        load(data, &mut pos, &mut no_pl)
    }

    #[test]
    fn basic_values_and_shared_containers() {
        // {'a': [1, -2, 3.5], 'b': <same list>, 'c': (True, None, 'x')} with the list appended to after memoising.
        let mut p = vec![0x80, 2, b'}', b'(', 0x8c, 1, b'a', b']', b'q', 0, b'(', b'K', 1, b'J'];
        p.extend((-2i32).to_le_bytes());
        p.push(b'G');
        p.extend(3.5f64.to_be_bytes());
        p.extend([b'e', 0x8c, 1, b'b', b'h', 0, 0x8c, 1, b'c', 0x88, b'N', 0x8c, 1, b'x', 0x87, b'u']);
        // After the dict is built, append 9 to the memoised list: both references must see it.
        p.extend([b'h', 0, b'K', 9, b'a', b'0', b'.']);
        let v = load_all(&p).unwrap();
        let list = PyValue::List(vec![PyValue::Int(1), PyValue::Int(-2), PyValue::Float(3.5), PyValue::Int(9)]);
        assert_eq!(v.get("a"), Some(&list));
        assert_eq!(v.get("b"), Some(&list));
        assert_eq!(
            v.get("c"),
            Some(&PyValue::Tuple(vec![PyValue::Bool(true), PyValue::None, PyValue::Str("x".into())]))
        );
    }

    #[test]
    fn long_integers() {
        assert_eq!(long_from_bytes(&[0xff]), PyValue::Int(-1));
        assert_eq!(long_from_bytes(&[0x00, 0x01]), PyValue::Int(256));
        assert_eq!(long_from_bytes(&[0xff; 9]), PyValue::BigInt(vec![0xff; 9]));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // Chain of one-element lists 300,000 deep, built through the memo: [ [ [ ... ] ] ].
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..300_000 {
            p.extend([b']', b'h', 0, b'a', b'q', 0]);
        }
        p.push(b'.');
        let e = load_all(&p).unwrap_err();
        assert!(e.reason.contains("too deep"), "{}", e.reason);
    }

    #[test]
    fn exponential_sharing_is_bounded() {
        // l0 = [], l(i+1) = [l(i), l(i)]: 2^40 leaves when unfolded.
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..40 {
            p.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
        }
        p.push(b'.');
        let e = load_all(&p).unwrap_err();
        assert!(e.reason.contains("too large") || e.reason.contains("too deep"), "{}", e.reason);
    }

    #[test]
    fn garbage_never_panics() {
        // Deterministic pseudo-random byte strings, with and without a protocol header.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..3000 {
            let len = 1 + (round % 64);
            let mut p = Vec::with_capacity(len + 2);
            if round % 2 == 0 {
                p.extend([0x80, 2]);
            }
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                // Bias towards valid opcodes so that the interpreter gets past the first byte.
                let ops = b"(}])tlds.uaeKJMNqhjXcR\x85\x86\x87\x88\x89\x8a\x8c\x94\x95Qb0";
                p.push(if state.is_multiple_of(3) {
                    (state >> 8) as u8
                } else {
                    ops[(state >> 16) as usize % ops.len()]
                });
            }
            let _ = load_all(&p);
        }
    }
}
