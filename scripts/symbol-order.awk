# The symbol ordering file of scripts/link-ordered. Input: `nm -P` of the
# objects being linked; -v hot=FILE: the names wanted, in order
# (packaging/hot-symbols). A listed name defined as is is taken as is (same
# toolchain and lock file); a Rust name that is not is matched with its hash
# and crate disambiguators normalised away (every instance of a generic
# function then); anything else (libc's) is passed verbatim.
function norm(s) {
  if (s ~ /^_ZN/) sub(/17h[0-9a-f]+E$/, "E", s)
  else if (s ~ /^_R/) gsub(/Cs[0-9A-Za-z]+_/, "Cs_", s)
  return s
}
BEGIN {
  while ((getline line < hot) > 0) {
    if (line ~ /^#/ || line == "" || (line in listed)) continue
    listed[line] = 1
    name[++n] = line
  }
}
NF >= 2 && $1 !~ /:$/ && !(($1) in defined) {
  defined[$1] = 1
  k = norm($1)
  by_key[k] = by_key[k] "\n" $1
}
END {
  for (i = 1; i <= n; i++) {
    s = name[i]
    if (s !~ /^_(ZN|R)/ || (s in defined)) { print s; continue }
    k = norm(s)
    if (!(k in by_key) || (k in expanded)) continue
    expanded[k] = 1
    print substr(by_key[k], 2)
  }
}
