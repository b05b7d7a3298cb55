//! The fn under an attribute, parsed precisely where it matters (the
//! signature) and kept as raw tokens where it does not (the body), so that a
//! body that does not parse still reaches rustc unchanged.

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};

use super::Ctxt;
use syn::{
    Attribute, Signature, Visibility,
    parse::{Parse, ParseStream},
};

/// `#[attrs] vis sig { body }`.
#[allow(missing_debug_implementations)] // syn's types implement Debug only with `extra-traits`
pub struct MaybeItemFn {
    /// The attributes left on the fn (the other attributes).
    pub attrs: Vec<Attribute>,
    /// Its visibility.
    pub vis: Visibility,
    /// Its signature, emitted as written.
    pub sig: Signature,
    /// The body's braces and everything inside.
    pub body: Group,
}

impl Parse for MaybeItemFn {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis: Visibility = input.parse()?;
        let sig: Signature = input.parse()?;
        let body = match input.parse::<TokenTree>() {
            Ok(TokenTree::Group(group)) if group.delimiter() == Delimiter::Brace => group,
            _ => {
                return Err(syn::Error::new_spanned(
                    &sig,
                    "this fn has no body to retry; put the attribute on an implementation, not on a declaration",
                ));
            }
        };
        if !input.is_empty() {
            return Err(input.error("unexpected tokens after the fn body"));
        }
        Ok(MaybeItemFn {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

/// `body`, to be nested inside generated code: the same braces at the same
/// place, marked as generated (mixed-site hygiene), because rustc's
/// `unused_braces` lint fires on a one-line body nested as the tail of a
/// block (`async { { Ok(x) } }`) and would tell the user to delete braces
/// their fn needs. The tokens inside keep their spans and hygiene.
///
/// In: `{ Ok(x.len()) }` (braces at the user's fn); out: the same, with
/// braces that the lint, which skips generated code, leaves alone.
pub fn nested_body(body: &Group) -> Group {
    let mut nested = Group::new(body.delimiter(), body.stream());
    nested.set_span(body.span().resolved_at(proc_macro2::Span::mixed_site()));
    nested
}

/// Replaces the `self` value in `body` by `replacement`, leaving nested
/// `impl` and `trait` blocks alone (their `self` is another one).
///
/// In: `{ self.name.len() }`; out: `{ __steadfast_self.name.len() }`.
pub fn rename_self(body: TokenStream, replacement: &str) -> TokenStream {
    let mut output = Vec::new();
    let mut nested_item = false;
    for tree in body {
        match tree {
            TokenTree::Ident(ident) if ident == "impl" || ident == "trait" => {
                nested_item = true;
                output.push(TokenTree::Ident(ident));
            }
            TokenTree::Ident(ident) if ident == "self" && !nested_item => {
                output.push(TokenTree::Ident(proc_macro2::Ident::new(
                    replacement,
                    ident.span(),
                )));
            }
            TokenTree::Group(group) if nested_item && group.delimiter() == Delimiter::Brace => {
                nested_item = false;
                output.push(TokenTree::Group(group));
            }
            TokenTree::Group(group) if !nested_item => {
                let mut renamed =
                    Group::new(group.delimiter(), rename_self(group.stream(), replacement));
                renamed.set_span(group.span());
                output.push(TokenTree::Group(renamed));
            }
            other => output.push(other),
        }
    }
    output.into_iter().collect()
}

/// The fn under `#[attribute]`; `None` when the item is not one, with the
/// error in `cx` (at the item's keyword when it is no fn at all: see
/// [`not_a_fn`]).
pub fn parse_fn(
    item: &TokenStream,
    attribute: &str,
    wants: &str,
    cx: &Ctxt,
) -> Option<MaybeItemFn> {
    match syn::parse2::<MaybeItemFn>(item.clone()) {
        Ok(item_fn) => Some(item_fn),
        Err(error) => {
            cx.syn_error(not_a_fn(item, attribute, wants).unwrap_or(error));
            None
        }
    }
}

/// The error for an item that is not a fn at all, at its keyword:
/// "#\[`attribute`\] `wants`, not on a struct".
pub fn not_a_fn(item: &TokenStream, attribute: &str, wants: &str) -> Option<syn::Error> {
    let parsed: syn::Item = syn::parse2(item.clone()).ok()?;
    let (what, tokens): (&str, &dyn quote::ToTokens) = match &parsed {
        syn::Item::Fn(_) => return None,
        syn::Item::Struct(item) => ("a struct", &item.struct_token),
        syn::Item::Enum(item) => ("an enum", &item.enum_token),
        syn::Item::Impl(item) => (
            "an impl block (put it on each method instead)",
            &item.impl_token,
        ),
        syn::Item::Trait(item) => (
            "a trait (put it on each method implementation instead)",
            &item.trait_token,
        ),
        syn::Item::Mod(item) => ("a module", &item.mod_token),
        syn::Item::Const(item) => ("a const", &item.const_token),
        syn::Item::Static(item) => ("a static", &item.static_token),
        syn::Item::Type(item) => ("a type alias", &item.type_token),
        _ => ("this item", &parsed),
    };
    Some(syn::Error::new_spanned(
        tokens,
        format!("#[{attribute}] {wants}, not on {what}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn self_is_renamed_outside_nested_items() {
        let body = quote! {
            let n = self.len();
            println!("{}", self.name);
            impl Foo { fn bar(&self) { self.x } }
            (self, n)
        };
        let renamed = rename_self(body, "__this").to_string();
        assert_eq!(renamed.matches("__this").count(), 3, "{renamed}");
        assert!(
            renamed.contains("fn bar (& self) { self . x }"),
            "{renamed}"
        );
    }
}
