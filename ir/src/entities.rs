//! Typed `u32` ids into the arenas of a [`Kernel`](crate::Kernel).
//!
//! Ids are only meaningful for the kernel that made them. Their `Display` is the form used in
//! diagnostics (`%v3`, `inst3`, `block1`, `param2`); the text form prints value names instead.

use std::fmt;

macro_rules! entity {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

entity!(
    /// An SSA value: a scalar parameter, an instruction result, or a loop block argument.
    Value,
    "%v"
);
entity!(
    /// An instruction in the kernel's instruction arena.
    Inst,
    "inst"
);
entity!(
    /// A block: the kernel body or a loop body.
    Block,
    "block"
);
entity!(
    /// A kernel parameter (buffer or scalar), by position in the signature.
    Param,
    "param"
);
