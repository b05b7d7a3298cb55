//! `#[derive(Classify)]`: every variant says how it classifies, or the
//! derive fails at that variant (exhaustive by construction).

mod attrs;
mod expand;

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput};

use attrs::{Classification, ContainerAttrs};
use steadfast_macro_support::syntax::Ctxt;

/// One enum variant, or the struct itself.
pub(crate) struct Case {
    /// `Variant` (None for a struct).
    pub(crate) variant: Option<syn::Ident>,
    pub(crate) classification: Classification,
    pub(crate) timeout: bool,
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let input: DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let cx = Ctxt::new();
    let container = ContainerAttrs::parse(&input.attrs, &cx);
    let cases: Vec<Case> = match &input.data {
        Data::Enum(data) => data
            .variants
            .iter()
            .filter_map(|variant| {
                let parsed =
                    attrs::parse_case(&variant.attrs, &variant.fields, &variant.ident, &cx)?;
                Some(Case {
                    variant: Some(variant.ident.clone()),
                    classification: parsed.0,
                    timeout: parsed.1,
                })
            })
            .collect(),
        Data::Struct(data) => attrs::parse_case(&input.attrs, &data.fields, &input.ident, &cx)
            .map(|(classification, timeout)| Case {
                variant: None,
                classification,
                timeout,
            })
            .into_iter()
            .collect(),
        Data::Union(data) => {
            cx.error_spanned_by(
                data.union_token,
                "#[derive(Classify)] supports enums and structs, not unions",
            );
            Vec::new()
        }
    };
    let timeouts: Vec<&Case> = cases.iter().filter(|case| case.timeout).collect();
    if let [_, second, ..] = timeouts.as_slice() {
        cx.error_spanned_by(
            &second.variant,
            "only one variant can be `#[classify(timeout)]`: the one built when an attempt runs out of time",
        );
    }
    if let Err(errors) = cx.check() {
        return errors.to_compile_error();
    }
    let root = container
        .crate_path
        .unwrap_or_else(|| syn::parse_quote!(::steadfast));
    let output = expand::generate(&input, &cases, &root);
    quote!(#output)
}
