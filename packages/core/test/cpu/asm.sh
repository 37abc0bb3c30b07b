#!/bin/sh
# Development aid (not used by the tests): assemble GNU-as Intel-syntax text placed at ORG
# and print the bytes as hex, for the listings embedded in the tests.
# usage: asm.sh ORG 'text with .code16/.code32/.code64 and ; as line separator'
org=$1; shift
tmp=$(mktemp -d)
printf '.intel_syntax noprefix\n%s\n' "$(echo "$*" | tr ';' '\n')" > "$tmp/a.s"
as --64 -o "$tmp/a.o" "$tmp/a.s" || exit 1
ld -Ttext="$org" --oformat binary -o "$tmp/a.bin" "$tmp/a.o" || exit 1
od -An -tx1 -v "$tmp/a.bin" | tr -d '\n' | sed 's/^ //'
echo
rm -rf "$tmp"
