//! Recognizing the shapes of fns that other attributes produced.

use proc_macro2::{Group, TokenStream};
use quote::ToTokens;
use syn::{
    AngleBracketedGenericArguments, Expr, GenericArgument, PathArguments, ReturnType, Stmt, Type,
    TypeParamBound,
};

use super::MaybeItemFn;

/// Recognizes a fn rewritten by `#[async_trait]`: it returns
/// `Pin<Box<dyn Future<Output = R> + …>>` and its body is
/// `Box::pin(async move { … })`. Returns that block and `R`.
pub fn async_trait_parts(item: &MaybeItemFn) -> Option<(Group, Type)> {
    let ReturnType::Type(_, ty) = &item.sig.output else {
        return None;
    };
    let output = future_output(ty)?;
    let block: syn::Block = syn::parse2(item.body.to_token_stream()).ok()?;
    let [Stmt::Expr(Expr::Call(call), None)] = block.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(function) = &*call.func else {
        return None;
    };
    let is_box_pin = function
        .path
        .segments
        .iter()
        .rev()
        .take(2)
        .map(|s| s.ident.to_string())
        .eq(["pin", "Box"]);
    let [Expr::Async(async_block)] = call.args.iter().collect::<Vec<_>>().as_slice() else {
        return None;
    };
    if !is_box_pin || async_block.capture.is_none() {
        return None;
    }
    let body = syn::parse2::<TokenStream>(async_block.block.to_token_stream()).ok()?;
    let group = match body.into_iter().next()? {
        proc_macro2::TokenTree::Group(group) => group,
        _ => return None,
    };
    Some((group, output))
}

/// `R` in `Pin<Box<dyn Future<Output = R> + Send + 'a>>`.
fn future_output(ty: &Type) -> Option<Type> {
    let pinned = single_generic(ty, "Pin")?;
    let boxed = single_generic(&pinned, "Box")?;
    let Type::TraitObject(object) = boxed else {
        return None;
    };
    object.bounds.iter().find_map(|bound| {
        let TypeParamBound::Trait(bound) = bound else {
            return None;
        };
        angle_arguments(&bound.path, "Future")?
            .args
            .iter()
            .find_map(|argument| match argument {
                GenericArgument::AssocType(assoc) if assoc.ident == "Output" => {
                    Some(assoc.ty.clone())
                }
                _ => None,
            })
    })
}

/// The first type argument of `ty` if its last path segment is `name`
/// (`single_generic(Option<u32>, "Option")` is `u32`).
pub fn single_generic(ty: &Type, name: &str) -> Option<Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    angle_arguments(&path.path, name)?
        .args
        .iter()
        .find_map(|argument| match argument {
            GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        })
}

/// The `<…>` of `path`'s last segment, if that segment is `name`.
fn angle_arguments<'a>(
    path: &'a syn::Path,
    name: &str,
) -> Option<&'a AngleBracketedGenericArguments> {
    let segment = path
        .segments
        .last()
        .filter(|segment| segment.ident == name)?;
    match &segment.arguments {
        PathArguments::AngleBracketed(arguments) => Some(arguments),
        _ => None,
    }
}

/// Whether `ty` holds `impl Trait` somewhere (and so cannot be named in a body).
pub fn contains_impl_trait(ty: &Type) -> bool {
    ty.to_token_stream().into_iter().any(|tree| is_impl(&tree))
}

fn is_impl(tree: &proc_macro2::TokenTree) -> bool {
    match tree {
        proc_macro2::TokenTree::Ident(ident) => ident == "impl",
        proc_macro2::TokenTree::Group(group) => {
            group.stream().into_iter().any(|tree| is_impl(&tree))
        }
        _ => false,
    }
}
