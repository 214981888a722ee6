//! One `key = value`, `key` or `key(...)` being read: the sequence every option and every
//! setting goes through (read the value in its shape, parse it, key it, store it once),
//! written once.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Expr, Ident, Token};

use super::values::{Val, flag, list, skip, unknown, value};
use super::{Level, Opt, Slot};
use crate::ctxt::Ctxt;

/// The key being read, where it is (`level`), and the names valid there.
pub(super) struct Entry<'m, 'a> {
    meta: &'m ParseNestedMeta<'a>,
    cx: &'m Ctxt,
    pub(super) key: Ident,
    level: Level,
    names: &'static [&'static str],
}

impl<'m, 'a> Entry<'m, 'a> {
    /// The entry for `meta`, or `None` when its key is not a plain name, such as
    /// `retry::attempts` (reported, and skipped so the rest is still read).
    pub(super) fn new(
        meta: &'m ParseNestedMeta<'a>,
        cx: &'m Ctxt,
        level: Level,
        names: &'static [&'static str],
    ) -> syn::Result<Option<Self>> {
        let Some(key) = meta.path.get_ident().cloned() else {
            cx.error_spanned_by(&meta.path, unknown(&level.what(), &meta.path, names));
            skip(meta)?;
            return Ok(None);
        };
        Ok(Some(Entry {
            meta,
            cx,
            key,
            level,
            names,
        }))
    }

    /// Reads one entry with `each`; a key that is not a plain name is reported instead.
    pub(super) fn read(
        meta: &'m ParseNestedMeta<'a>,
        cx: &'m Ctxt,
        level: Level,
        names: &'static [&'static str],
        each: impl FnOnce(&Self) -> syn::Result<()>,
    ) -> syn::Result<()> {
        match Entry::new(meta, cx, level, names)? {
            Some(entry) => each(&entry),
            None => Ok(()),
        }
    }

    pub(super) fn name(&self) -> String {
        self.key.to_string()
    }

    /// Whether the key is followed by `= value`.
    pub(super) fn has_value(&self) -> bool {
        self.meta.input.peek(Token![=])
    }

    /// `key = value`, parsed by `parse` (which reports what is wrong with it), stored once.
    pub(super) fn value<T>(
        &self,
        slot: &mut Slot<T>,
        example: &str,
        parse: impl FnOnce(Expr) -> Option<Val<T>>,
    ) -> syn::Result<()> {
        let parsed = value(self.meta, self.cx, &self.key, example)?.and_then(parse);
        slot.set(
            self.cx,
            &self.key,
            self.level,
            parsed.map(|v| v.keyed(&self.key)),
        );
        Ok(())
    }

    /// `key`, or `key = true|false`, stored once.
    pub(super) fn flag(&self, slot: &mut Slot<bool>) -> syn::Result<()> {
        let parsed = flag(self.meta, self.cx, &self.key)?;
        slot.set(self.cx, &self.key, self.level, parsed);
        Ok(())
    }

    /// `key(settings...)` or `key` alone, each setting read by `each`, stored once.
    pub(super) fn list<T: Default>(
        &self,
        slot: &mut Slot<T>,
        example: &str,
        mut each: impl FnMut(&mut T, ParseNestedMeta<'_>) -> syn::Result<()>,
    ) -> syn::Result<()> {
        let mut settings = T::default();
        let span = list(self.meta, self.cx, &self.key, example, |inner| {
            each(&mut settings, inner)
        })?;
        self.store(slot, span.map(|span| (span, settings)));
        Ok(())
    }

    /// Stores a value read some other way (`None` when it was invalid, already reported).
    pub(super) fn store<T>(&self, slot: &mut Slot<T>, value: Option<(Span, T)>) {
        let value = value.map(|(span, value)| Opt {
            key: self.key.span(),
            span,
            value,
        });
        slot.set(self.cx, &self.key, self.level, value);
    }

    /// Reports the key as unknown here, with the closest valid name, and skips its value.
    pub(super) fn unknown(&self) -> syn::Result<()> {
        self.cx.error(
            self.key.span(),
            unknown(&self.level.what(), &self.key, self.names),
        );
        self.skip()
    }

    /// Skips whatever follows the key.
    pub(super) fn skip(&self) -> syn::Result<()> {
        skip(self.meta)
    }
}
