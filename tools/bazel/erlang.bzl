"""A small Bazel rule for Erlang: compile .erl files with erlc.

Bazel 4 has no Erlang rules. `erl_beams` runs erlc once over all sources and
declares one .beam per source, so other rules can depend on the outputs.
"""

def _erl_beams_impl(ctx):
    outs = []
    for src in ctx.files.srcs:
        if not src.basename.endswith(".erl"):
            fail("erl_beams: %s is not an .erl file" % src.path)
        outs.append(ctx.actions.declare_file(
            ctx.attr.outdir + "/" + src.basename[:-4] + ".beam",
        ))
    if not outs:
        return [DefaultInfo(files = depset([]))]
    include_dirs = {}
    for h in ctx.files.hdrs:
        include_dirs[h.dirname] = True
    args = ctx.actions.args()
    args.add_all(["+debug_info", "+warnings_as_errors", "+warn_missing_spec_all"] if ctx.attr.strict_specs else ["+debug_info", "+warnings_as_errors"])
    for d in include_dirs.keys():
        args.add("-I", d)
    for d in ctx.files.beam_deps:
        args.add("-pa", d.dirname)
    args.add("-o", outs[0].dirname)
    args.add_all(ctx.files.srcs)
    ctx.actions.run(
        executable = "erlc",
        arguments = [args],
        inputs = ctx.files.srcs + ctx.files.hdrs + ctx.files.beam_deps,
        outputs = outs,
        mnemonic = "Erlc",
        use_default_shell_env = True,
        progress_message = "erlc %s" % ctx.label,
    )
    return [DefaultInfo(files = depset(outs))]

erl_beams = rule(
    implementation = _erl_beams_impl,
    attrs = {
        "srcs": attr.label_list(allow_files = [".erl"]),
        "hdrs": attr.label_list(allow_files = [".hrl"]),
        "beam_deps": attr.label_list(allow_files = [".beam"]),
        "outdir": attr.string(default = "ebin"),
        "strict_specs": attr.bool(default = False),
    },
)
