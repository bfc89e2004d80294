//! Relinks the executable when the code layout scripts/build-plugins asks
//! for changes (its linker, scripts/link-ordered, reads packaging/hot-symbols;
//! cargo cannot see either on its own).

fn main() {
    println!("cargo:rerun-if-changed=../packaging/hot-symbols");
    println!("cargo:rerun-if-changed=../scripts/link-ordered");
    println!("cargo:rerun-if-changed=../scripts/symbol-order.awk");
}
