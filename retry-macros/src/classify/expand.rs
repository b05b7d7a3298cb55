//! Code generation for `#[derive(Classify)]`.
//!
//! In:
//!
//! ```text
//! enum FetchError {
//!     #[code(Unavailable)] Down,
//!     #[classify(transparent)] Grpc(tonic::Status),
//! }
//! ```
//!
//! Out:
//!
//! ```text
//! impl Classify for FetchError {
//!     fn code(&self) -> Option<Code> {
//!         match self { Self::Down { .. } => Some(Code::Unavailable), Self::Grpc { 0: inner, .. } => Classify::code(inner) }
//!     }
//!     fn retry_after(&self) -> Option<RetryAfter> {
//!         match self { Self::Grpc { 0: inner, .. } => Classify::retry_after(inner), _ => None }
//!     }
//! }
//! ```

use proc_macro2::TokenStream;
use quote::quote;
use syn::{DeriveInput, Path};

use super::{Case, attrs::Classification};

pub(crate) fn generate(input: &DeriveInput, cases: &[Case], root: &Path) -> TokenStream {
    let private = quote!(#root::__private);
    let name = &input.ident;
    let mut generics = input.generics.clone();
    if !generics.params.is_empty() {
        let predicates = &mut generics.make_where_clause().predicates;
        for case in cases {
            if let Classification::Delegate { ty, .. } = &case.classification {
                predicates.push(syn::parse_quote!(#ty: #private::Classify));
            }
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let inner = quote!(__steadfast_inner);
    let path = |case: &Case| match &case.variant {
        Some(variant) => quote!(Self::#variant),
        None => quote!(Self),
    };
    let code_arms = cases.iter().map(|case| {
        let path = path(case);
        match &case.classification {
            Classification::Code(code) => {
                quote!(#path { .. } => ::core::option::Option::Some(#private::Code::#code),)
            }
            Classification::Delegate { member, .. } => {
                quote!(#path { #member: #inner, .. } => #private::Classify::code(#inner),)
            }
        }
    });
    let retry_after_arms = cases.iter().filter_map(|case| {
        let path = path(case);
        match &case.classification {
            Classification::Delegate { member, .. } => Some(
                quote!(#path { #member: #inner, .. } => #private::Classify::retry_after(#inner),),
            ),
            Classification::Code(_) => None,
        }
    });
    let from_timeout = cases.iter().find(|case| case.timeout).map(|case| {
        let path = path(case);
        let build = match &case.classification {
            Classification::Code(_) => quote!(#path),
            Classification::Delegate { member, .. } => {
                quote!(#path { #member: #private::FromTimeout::from_timeout(__steadfast_elapsed) })
            }
        };
        quote! {
            #[automatically_derived]
            impl #impl_generics #private::FromTimeout for #name #ty_generics #where_clause {
                fn from_timeout(__steadfast_elapsed: #private::Elapsed) -> Self {
                    let _ = __steadfast_elapsed;
                    #build
                }
            }
        }
    });
    quote! {
        #[automatically_derived]
        impl #impl_generics #private::Classify for #name #ty_generics #where_clause {
            fn code(&self) -> ::core::option::Option<#private::Code> {
                match self {
                    #(#code_arms)*
                }
            }

            #[allow(unreachable_patterns)]
            fn retry_after(&self) -> ::core::option::Option<#private::RetryAfter> {
                match self {
                    #(#retry_after_arms)*
                    _ => ::core::option::Option::None,
                }
            }
        }
        #from_timeout
    }
}
