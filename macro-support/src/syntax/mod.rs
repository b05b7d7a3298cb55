//! Syntax helpers shared by the attribute crates (feature `syn`): an error
//! collector, the fn under an attribute, and the shapes other attributes
//! leave behind.

mod args;
mod ctxt;
mod fn_shape;
mod item_fn;

pub use args::{
    AttributeArguments, Spanned, duration_expr, named_arguments, positive_duration, runtime_root,
    string_value, value_of, with_durations,
};
pub use ctxt::Ctxt;
pub use fn_shape::{async_trait_parts, contains_impl_trait, single_generic};
pub use item_fn::{MaybeItemFn, nested_body, not_a_fn, parse_fn, rename_self};
