//! `key=value` lists: how shapes and configs are named on the command line, in the registry and
//! (later) in the tuning database.

use crate::KernelError;
use kiln_ir::DType;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// An ordered `key=value` list, written `k1=v1,k2=v2`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Args(BTreeMap<String, String>);

impl Args {
    pub fn new() -> Args {
        Args::default()
    }

    /// Parses `k1=v1,k2=v2` (spaces around items are ignored; an empty string is an empty list).
    pub fn parse(text: &str) -> Result<Args, KernelError> {
        let mut args = Args::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((k, v)) = item.split_once('=') else {
                return Err(KernelError::BadArgs { text: text.to_string(), why: format!("`{item}` is not key=value") });
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty() || v.is_empty() {
                return Err(KernelError::BadArgs {
                    text: text.to_string(),
                    why: format!("`{item}` has an empty side"),
                });
            }
            if args.0.insert(k.to_string(), v.to_string()).is_some() {
                return Err(KernelError::BadArgs { text: text.to_string(), why: format!("`{k}` is given twice") });
            }
        }
        Ok(args)
    }

    /// Sets `key` to `value` (replacing any earlier value) and returns `self` for chaining.
    pub fn with(mut self, key: &str, value: impl fmt::Display) -> Args {
        self.0.insert(key.to_string(), value.to_string());
        self
    }

    pub fn set(&mut self, key: &str, value: impl fmt::Display) {
        self.0.insert(key.to_string(), value.to_string());
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `self` with every key of `over` replacing or adding to it.
    pub fn overlaid(&self, over: &Args) -> Args {
        let mut out = self.clone();
        for (k, v) in over.iter() {
            out.set(k, v);
        }
        out
    }
}

impl fmt::Display for Args {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Which list a key belongs to, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsKind {
    Shape,
    Config,
}

impl fmt::Display for ArgsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArgsKind::Shape => "shape",
            ArgsKind::Config => "config",
        })
    }
}

/// Reads typed fields out of [`Args`]; [`Reader::finish`] rejects keys nobody asked for, so a typo
/// is an error instead of a silently ignored setting.
pub struct Reader<'a> {
    kernel: &'static str,
    kind: ArgsKind,
    args: &'a Args,
    known: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    pub fn new(kernel: &'static str, kind: ArgsKind, args: &'a Args) -> Reader<'a> {
        Reader { kernel, kind, args, known: BTreeSet::new() }
    }

    /// A required field.
    pub fn get<T: FromStr>(&mut self, key: &'static str) -> Result<T, KernelError> {
        self.known.insert(key);
        match self.args.get(key) {
            None => Err(KernelError::MissingKey { kernel: self.kernel, kind: self.kind, key }),
            Some(v) => self.convert(key, v),
        }
    }

    /// An optional field with a default.
    pub fn get_or<T: FromStr>(&mut self, key: &'static str, default: T) -> Result<T, KernelError> {
        self.known.insert(key);
        match self.args.get(key) {
            None => Ok(default),
            Some(v) => self.convert(key, v),
        }
    }

    fn convert<T: FromStr>(&self, key: &'static str, value: &str) -> Result<T, KernelError> {
        value.parse().map_err(|_| KernelError::BadValue {
            kernel: self.kernel,
            kind: self.kind,
            key,
            value: value.to_string(),
            expected: std::any::type_name::<T>().rsplit("::").next().unwrap_or("value"),
        })
    }

    /// A required knob that must be one of `choices`; any other value is a
    /// [`KernelError::Constraint`] naming the key and the choices.
    pub fn one_of(&mut self, key: &'static str, choices: &[u32]) -> Result<u32, KernelError> {
        let value: u32 = self.get(key)?;
        if choices.contains(&value) {
            Ok(value)
        } else {
            Err(KernelError::Constraint {
                kernel: self.kernel,
                constraint: format!("{key} = {value} is not one of {choices:?}"),
            })
        }
    }

    /// Fails on any key that was not read.
    pub fn finish(self) -> Result<(), KernelError> {
        for (k, _) in self.args.iter() {
            if !self.known.contains(k) {
                return Err(KernelError::UnknownKey {
                    kernel: self.kernel,
                    kind: self.kind,
                    key: k.to_string(),
                    known: self.known.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", "),
                });
            }
        }
        Ok(())
    }
}

/// Parses the dtype key `key` = `name`, which must be one of `allowed`.
pub fn parse_dtype(kernel: &'static str, key: &str, name: &str, allowed: &[DType]) -> Result<DType, KernelError> {
    match DType::from_name(name) {
        Some(d) if allowed.contains(&d) => Ok(d),
        _ => {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            let constraint = format!("{key} `{name}` is not one of {}", names.join(", "));
            Err(KernelError::Constraint { kernel, constraint })
        }
    }
}
