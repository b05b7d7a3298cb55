//! Parsing `#[code(…)]` and `#[classify(…)]`.

use syn::{Attribute, Fields, Ident, Member, Path, Type, spanned::Spanned};

use steadfast_macro_support::syntax::Ctxt;

/// How one case maps to a code.
pub(crate) enum Classification {
    /// `#[code(Unavailable)]`.
    Code(Ident),
    /// `#[classify(transparent)]` or `#[classify(from = field)]`: ask the field.
    Delegate { member: Member, ty: Box<Type> },
}

/// `#[classify(crate = path)]` on the type.
pub(crate) struct ContainerAttrs {
    pub(crate) crate_path: Option<Path>,
}

impl ContainerAttrs {
    pub(crate) fn parse(attrs: &[Attribute], cx: &Ctxt) -> ContainerAttrs {
        let mut crate_path = None;
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("classify")) {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("crate") {
                    crate_path = Some(meta.value()?.parse::<Path>()?);
                } else if let Ok(value) = meta.value() {
                    // Case-level options are checked by `parse_case`.
                    value.parse::<proc_macro2::TokenStream>()?;
                }
                Ok(())
            });
            if let Err(error) = result {
                cx.syn_error(error);
            }
        }
        ContainerAttrs { crate_path }
    }
}

const OPTIONS: [&str; 4] = ["transparent", "from", "timeout", "crate"];

/// The classification of a variant (or struct) and whether it is the
/// timeout case; `None` after reporting a mistake.
pub(crate) fn parse_case(
    attrs: &[Attribute],
    fields: &Fields,
    name: &Ident,
    cx: &Ctxt,
) -> Option<(Classification, bool)> {
    let mut code: Option<Ident> = None;
    let mut delegate: Option<(Member, Type)> = None;
    let mut timeout = false;
    let mut failed = false;
    for attr in attrs {
        if attr.path().is_ident("code") {
            match attr.parse_args::<Ident>() {
                Ok(ident) if code.is_some() => {
                    cx.error_spanned_by(ident, "`#[code]` is given twice: give one code");
                    failed = true;
                }
                Ok(ident) => match steadfast_macro_support::parse_code_list(&ident.to_string()) {
                    Ok(_) => code = Some(ident),
                    Err(error) => {
                        cx.error_spanned_by(&ident, error);
                        failed = true;
                    }
                },
                Err(_) => {
                    cx.error_spanned_by(attr, "write one code name: `#[code(Unavailable)]`");
                    failed = true;
                }
            }
        } else if attr.path().is_ident("classify") {
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("transparent") {
                    delegate = Some(single_field(fields, &meta.path, cx)?);
                } else if meta.path.is_ident("from") {
                    let member: Member = meta.value()?.parse()?;
                    delegate = Some(named_field(fields, &member, cx)?);
                } else if meta.path.is_ident("timeout") {
                    timeout = true;
                } else if meta.path.is_ident("crate") {
                    meta.value()?.parse::<Path>()?;
                } else {
                    let given = meta.path.get_ident().map(ToString::to_string).unwrap_or_default();
                    let hint = steadfast_macro_support::closest(&given, OPTIONS)
                        .map(|known| format!(" (did you mean `{known}`?)"))
                        .unwrap_or_default();
                    return Err(meta.error(format!(
                        "unknown option `{given}`{hint}; #[classify] takes `transparent`, `from = field`, `timeout` and, on the type, `crate = path`"
                    )));
                }
                Ok(())
            });
            if let Err(error) = result {
                cx.syn_error(error);
                failed = true;
            }
        }
    }
    if failed {
        return None;
    }
    let classification = match (code, delegate) {
        (Some(code), Some(_)) => {
            cx.error_spanned_by(
                code,
                "give either a code (`#[code(…)]`) or a field to ask (`#[classify(transparent)]`, `#[classify(from = field)]`), not both",
            );
            return None;
        }
        (Some(code), None) => Classification::Code(code),
        (None, Some((member, ty))) => Classification::Delegate {
            member,
            ty: Box::new(ty),
        },
        (None, None) => {
            cx.error_spanned_by(
                name,
                format!(
                    "`{name}` is not classified: add `#[code(Unavailable)]` (or another code), or `#[classify(transparent)]` to ask the error it wraps"
                ),
            );
            return None;
        }
    };
    if timeout && !timeout_constructible(fields, &classification) {
        cx.error_spanned_by(
            name,
            "a `#[classify(timeout)]` variant is built from an elapsed timeout, so it must have no fields, or a single field that implements `FromTimeout` with `#[classify(transparent)]`",
        );
        return None;
    }
    Some((classification, timeout))
}

fn timeout_constructible(fields: &Fields, classification: &Classification) -> bool {
    match classification {
        Classification::Code(_) => fields.is_empty(),
        Classification::Delegate { .. } => fields.len() == 1,
    }
}

fn single_field(fields: &Fields, at: &Path, cx: &Ctxt) -> syn::Result<(Member, Type)> {
    let mut iter = fields.iter();
    match (iter.next(), iter.next()) {
        (Some(field), None) => Ok((member_of(field, 0), field.ty.clone())),
        _ => {
            let _ = cx;
            Err(syn::Error::new(
                at.span(),
                "`transparent` needs exactly one field to ask; with several fields, name one: `#[classify(from = field)]`",
            ))
        }
    }
}

fn named_field(fields: &Fields, member: &Member, cx: &Ctxt) -> syn::Result<(Member, Type)> {
    let _ = cx;
    fields
        .iter()
        .enumerate()
        .find(|(index, field)| member_of(field, *index) == *member)
        .map(|(index, field)| (member_of(field, index), field.ty.clone()))
        .ok_or_else(|| {
            syn::Error::new(
                member.span(),
                "no such field: name a field of this variant, as in `#[classify(from = source)]`",
            )
        })
}

fn member_of(field: &syn::Field, index: usize) -> Member {
    match &field.ident {
        Some(ident) => Member::Named(ident.clone()),
        None => Member::Unnamed(syn::Index::from(index)),
    }
}
