# crandom(4) at the shell: run with
#   devfsd regress --module crandom tests/regress/crandom.sh
# A fresh devfsd serves $DEV with crandom loaded; see devfsd(8), Subcommands.
. "$DEVFSD_REGRESS_LIB"

mknod_c crandom crandom 0
check_exit 0 sh -c "printf hello > $DEV/crandom"

# Every read is a permutation of what was written ...
for i in 1 2 3 4 5; do
	out=$(head -c 5 "$DEV/crandom") || fail "head"
	sorted=$(printf %s "$out" | fold -w1 | sort | tr -d '\n')
	[ "$sorted" = ehllo ] || fail "read '$out' is no permutation of hello"
done
echo "ok: five reads are permutations"

# ... one per read(2).
check_out 15 sh -c "dd if=$DEV/crandom bs=5 count=3 status=none | wc -c | tr -d ' '"

# modstat shows it loaded by hand (FLAG i if isolated: devfsd regress -I),
# and modunload refuses while it is open.
check_out "crandom driver filesys" sh -c "modstat crandom | awk 'NR == 2 { print \$1, \$2, \$3 }'"
check_exit 0 sh -c "modstat crandom | awk 'NR == 2 { exit !(\$4 == \"-\" || \$4 == \"i\") }'"
exec 3<"$DEV/crandom"
check_err "modunload: crandom: Device or resource busy" modunload crandom
exec 3<&-
check_exit 0 modunload crandom
check_out "" sh -c "modstat | tail -n +2"
