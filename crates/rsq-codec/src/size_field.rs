//! 32-bit size fields: the one place a length becomes the big-endian `u32`
//! that announces it on the wire, so no encoder saturates or wraps one.
//! A length that does not fit is [`CodecError::SizeFieldOverflow`] where a
//! caller's input can reach it, and a panic with a message where the
//! caller's contract (a limit checked before) rules it out.

use crate::CodecError;

// Every length a size field can state is a `usize` on the targets rsq
// builds for, so decoders may index with a size they read.
const _: () = assert!(usize::BITS >= u32::BITS);

/// `len` as a size field, or [`CodecError::SizeFieldOverflow`] naming
/// `what` when it is larger than `u32::MAX`.
pub(crate) fn size_field(len: usize, what: &'static str) -> Result<u32, CodecError> {
    u32::try_from(len).map_err(|_| CodecError::SizeFieldOverflow { what, len })
}

/// `len` as a size field where a bound the caller checked (stated at the
/// call) guarantees it fits.
///
/// # Panics
///
/// If `len` is larger than `u32::MAX`: the caller broke that bound.
#[track_caller]
pub(crate) fn bounded_size_field(len: usize, what: &'static str) -> u32 {
    match size_field(len, what) {
        Ok(size) => size,
        Err(e) => panic!("{e}"),
    }
}

/// A size field read from the wire as a length. Lossless: see the
/// compile-time assertion above.
pub(crate) fn field_len(size: u32) -> usize {
    size as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_that_fit_convert_and_larger_ones_are_refused() {
        assert_eq!(size_field(0, "body"), Ok(0));
        assert_eq!(size_field(u32::MAX as usize, "body"), Ok(u32::MAX));
        assert_eq!(field_len(u32::MAX), u32::MAX as usize);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            size_field(u32::MAX as usize + 1, "body"),
            Err(CodecError::SizeFieldOverflow {
                what: "body",
                len: u32::MAX as usize + 1
            })
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    #[should_panic(expected = "frame of 4294967296 bytes does not fit")]
    fn a_broken_bound_panics_with_the_length() {
        bounded_size_field(u32::MAX as usize + 1, "frame");
    }
}
