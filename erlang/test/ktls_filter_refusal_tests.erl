%% EUnit tests of the "to allow" hint of refusal warnings: for a protected
%% receiver it names only options that would let the message through.
-module(ktls_filter_refusal_tests).
-include_lib("eunit/include/eunit.hrl").

%% init belongs to no application: neither unprotected_applications nor
%% system_applications can help; by name, allow_reg_names can.
boot_process_by_name_test() ->
    Hint = ktls_filter_refusal:allow_hint("message to a system process", init),
    ?assertEqual("trusted_peers (for operators' peers), or allow_reg_names [init]", Hint).

boot_process_by_pid_test() ->
    Hint = ktls_filter_refusal:allow_hint(
             "message to a system process that this message may not reach", whereis(init)),
    ?assertEqual("trusted_peers (for operators' peers)", Hint).

%% A process of kernel: unprotected_applications [kernel] would allow it;
%% system_applications (which protects more) is never suggested.
otp_application_process_test() ->
    Hint = ktls_filter_refusal:allow_hint(
             "message to a system process that this message may not reach", whereis(kernel_sup)),
    ?assertEqual("trusted_peers (for operators' peers), or unprotected_applications [kernel]",
                 Hint),
    ?assertEqual(nomatch, string:find(Hint, "system_applications")).

other_reasons_test() ->
    ?assertEqual("nothing: the receiver does not exist",
                 ktls_filter_refusal:allow_hint("no such process", undefined)),
    ?assertMatch("allow_mfa" ++ _,
                 ktls_filter_refusal:allow_hint("mfa not allowed: os:cmd/1", undefined)),
    ?assertMatch("max_new_atoms_per_connection" ++ _,
                 ktls_filter_refusal:allow_hint("more new atoms than the atom budget allows",
                                                ktls_attack_server)).
