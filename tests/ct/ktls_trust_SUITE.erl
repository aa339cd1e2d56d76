%% Operators under the default policy: trusted peers (option trusted_peers)
%% get remote shells, observer-style rpc and rpc of any function, by node
%% name (plain TCP) or by certificate (TLS: subject, operator CA); every
%% other peer keeps the default policy, and each refusal it meets is logged
%% once, rate-limited per connection, naming the rule and the option that
%% would allow it.
-module(ktls_trust_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, end_per_testcase/2]).
-export([remsh_from_trusted_peer/1, remsh_from_untrusted_peer_is_refused_and_logged/1,
         observer_rpc_from_trusted_peer/1, refusal_warnings_are_rate_limited/1,
         trust_by_certificate_subject/1, trust_by_operator_ca/1, bad_rules_are_refused/1]).

all() ->
    [remsh_from_trusted_peer, remsh_from_untrusted_peer_is_refused_and_logged,
     observer_rpc_from_trusted_peer, refusal_warnings_are_rate_limited,
     trust_by_certificate_subject, trust_by_operator_ca, bad_rules_are_refused].

init_per_suite(Config) ->
    Dir = ?config(priv_dir, Config),
    Certs = fun(Sub, Names) ->
                    D = filename:join(Dir, Sub),
                    Cmd = filename:join([ktls_ct_nodes:root(), "tools", "certs.sh"]) ++ " " ++ D
                        ++ " " ++ lists:join(" ", Names) ++ " 2>&1",
                    ct:log("~ts~n~ts", [Cmd, os:cmd(Cmd)]),
                    D
            end,
    %% Production CA: the target and an ordinary peer; a second CA for
    %% operators. Every node accepts both CAs (a bundle).
    Prod = Certs("prod", ["target@127.0.0.1", "app@127.0.0.1", "ops@127.0.0.1"]),
    Ops = Certs("ops", ["admin@127.0.0.1"]),
    Bundle = filename:join(Dir, "bundle.pem"),
    {ok, A} = file:read_file(filename:join(Prod, "ca.pem")),
    {ok, B} = file:read_file(filename:join(Ops, "ca.pem")),
    ok = file:write_file(Bundle, [A, B]),
    Confs = [{Name, bundled(filename:join(D, Name ++ ".conf"), filename:join(D, "ca.pem"), Bundle)}
             || {D, Name} <- [{Prod, "target"}, {Prod, "app"}, {Prod, "ops"}, {Ops, "admin"}]],
    [{confs, Confs}, {ops_ca, filename:join(Ops, "ca.pem")} | Config].

%% The options file with the CA bundle in place of its own CA.
bundled(Conf, Ca, Bundle) ->
    {ok, Text} = file:read_file(Conf),
    New = binary:replace(Text, list_to_binary(Ca), list_to_binary(Bundle), [global]),
    Out = filename:rootname(Conf) ++ "_bundle.conf",
    ok = file:write_file(Out, New),
    Out.

end_per_suite(_Config) ->
    ok.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

%% ------------------------------------------------------------------
%% Helpers
%% ------------------------------------------------------------------

start(Name, Args) ->
    {P, N} = ktls_ct_nodes:start(ktls_ct_nodes:unique(Name), ktls, Args),
    ktls_ct_nodes:track(P),
    {P, N}.

trust(Rules) ->
    ["-ktls_filter", "trusted_peers", lists:flatten(io_lib:format("~p", [Rules]))].

%% Logs warnings and notices of the node to a file, through the filters of
%% OTP's default handler (what an operator's console shows: it stops
%% events with a domain other than OTP's); returns the file.
log_to_file(P, Config, Name) ->
    Log = filename:join(?config(priv_dir, Config), Name ++ ".log"),
    {ok, Default} = ktls_ct_nodes:call(P, logger, get_handler_config, [default]),
    ok = ktls_ct_nodes:call(P, logger, add_handler,
                            [ktls_test_log, logger_std_h,
                             #{config => #{file => Log, filesync_repeat_interval => 100},
                               level => notice,
                               filters => maps:get(filters, Default),
                               filter_default => maps:get(filter_default, Default)}]),
    Log.

log_lines(Log, What) ->
    case file:read_file(Log) of
        {ok, Text} ->
            [L || L <- binary:split(Text, <<"\n">>, [global]), binary:match(L, What) =/= nomatch];
        _ ->
            []
    end.

wait_logged(Log, What) ->
    ok = ktls_ct_nodes:wait_until(fun() -> log_lines(Log, What) =/= [] end, 10000).

%% A node on a fixed port (remote shells need no epmd then).
epmdless(Name, Args) ->
    Port = ktls_ct_nodes:free_port(),
    {P, N} = ktls_ct_nodes:start(ktls_ct_nodes:unique(Name), epmdless,
                                 ["-ktls_filter_port", integer_to_list(Port) | Args]),
    ktls_ct_nodes:track(P),
    ok = ktls_ct_nodes:call(P, persistent_term, put, [ktls_remsh_marker, remsh_marker_value]),
    {P, N, Port}.

remsh_worked(Out, Node) ->
    string:find(Out, lists:flatten(io_lib:format("MARK:~p:remsh_marker_value", [Node])))
        =/= nomatch.

observer_calls(P, Target) ->
    ktls_ct_nodes:call(P, erlang, apply,
                       [fun() ->
                                [catch erpc:call(Target, erlang, memory, [], 5000),
                                 catch erpc:call(Target, application, which_applications, [],
                                                 5000),
                                 catch erpc:call(Target, observer_backend, sys_info, [], 5000),
                                 rpc:call(Target, ktls_filter, world_stats_get, [], 5000)]
                        end, []]).

%% ------------------------------------------------------------------
%% Cases
%% ------------------------------------------------------------------

%% ./ktls remsh names its node remsh_<pid>@HOST: a target that trusts that
%% name opens the shell (plain TCP: a convenience, the cookie is the secret).
remsh_from_trusted_peer(_Config) ->
    {T, TNode, Port} = epmdless("t", trust([{node, "remsh_*@127.0.0.1"}])),
    Out = ktls_ct_nodes:remsh(TNode, Port, ""),
    ct:log("~ts", [Out]),
    ?assert(remsh_worked(Out, TNode)),
    #{trusted_connections := N} = ktls_ct_nodes:call(T, ktls_filter, world_stats_get, []),
    ?assert(N >= 1),
    ok.

%% Without trust the default policy refuses the shell, and the target says
%% why in one warning that names the peer, the rule and the option.
remsh_from_untrusted_peer_is_refused_and_logged(Config) ->
    {T, TNode, Port} = epmdless("t", trust([{node, "ops_*@127.0.0.1"}])),
    Log = log_to_file(T, Config, "untrusted_remsh"),
    Out = ktls_ct_nodes:remsh(TNode, Port, ""),
    ct:log("~ts", [Out]),
    ?assertNot(remsh_worked(Out, TNode)),
    wait_logged(Log, <<"refused from remsh_">>),
    [Line | _] = log_lines(Log, <<"refused from remsh_">>),
    ct:log("~ts", [Line]),
    ?assertNotEqual(nomatch, binary:match(Line, <<"; rule: ">>)),
    ?assertNotEqual(nomatch, binary:match(Line, <<"; to allow: ">>)),
    ?assertNotEqual(nomatch, binary:match(Line, <<"trusted_peers">>)),
    #{untrusted_connections := U} = ktls_ct_nodes:call(T, ktls_filter, world_stats_get, []),
    ?assert(U >= 1),
    ok.

%% Observer-style rpc works from a trusted peer and is refused to another
%% one; channel_inspect on the target says which connection is trusted.
observer_rpc_from_trusted_peer(_Config) ->
    {T, TNode} = start("t", trust([{node, "ops_*@127.0.0.1"}])),
    {O, ONode} = start("ops", []),
    {U, UNode} = start("app", []),
    [Mem, Apps, SysInfo, Stats] = observer_calls(O, TNode),
    %% A node without trusted_peers counts its connections as untrusted too.
    #{untrusted_connections := UO, trusted_connections := 0} =
        ktls_ct_nodes:call(O, ktls_filter, world_stats_get, []),
    ?assert(UO >= 1),
    ?assert(is_list(Mem) andalso is_integer(proplists:get_value(total, Mem))),
    ?assert(lists:keymember(kernel, 1, Apps)),
    ?assert(is_list(SysInfo)),
    ?assert(is_map(Stats)),
    [R1, R2, R3, R4] = observer_calls(U, TNode),
    ct:log("untrusted: ~p", [[R1, R2, R3, R4]]),
    ?assertMatch({'EXIT', {exception, unauthorized}}, R1),
    ?assertMatch({badrpc, _}, R4),
    Channels = ktls_ct_nodes:call(T, ktls_filter, channel_list, []),
    Trust = maps:from_list(
              [{N, maps:get(trusted, ktls_ct_nodes:call(T, ktls_filter, channel_inspect, [C]))}
               || {N, C} <- Channels]),
    ct:log("~p", [Trust]),
    ?assertMatch(<<"{node,\"ops_*@127.0.0.1\"}">>, maps:get(ONode, Trust)),
    ?assertEqual(false, maps:get(UNode, Trust)),
    ok.

%% One refusal: exactly one warning naming the rule. A burst within the
%% same second: held back, and counted into the next warning.
refusal_warnings_are_rate_limited(Config) ->
    {T, TNode} = start("t", []),
    Log = log_to_file(T, Config, "rate"),
    {U, _} = start("app", []),
    Call = fun(N) ->
                   ktls_ct_nodes:call(U, erlang, apply,
                                      [fun() ->
                                               [catch rpc:call(TNode, os, getpid, [], 5000)
                                                || _ <- lists:seq(1, N)]
                                       end, []])
           end,
    [{badrpc, _}] = Call(1),
    Pattern = <<"rule: mfa not allowed">>,
    wait_logged(Log, Pattern),
    timer:sleep(500),
    [Line] = log_lines(Log, Pattern),
    ct:log("~ts", [Line]),
    ?assertNotEqual(nomatch, binary:match(Line, <<"erpc call of os:getpid/0">>)),
    ?assertNotEqual(nomatch, binary:match(Line, <<"allow_mfa">>)),
    timer:sleep(1100),
    %% 50 refusals: the first is logged, the rest of that second are held.
    _ = Call(50),
    timer:sleep(1100),
    _ = Call(1),
    ok = ktls_ct_nodes:wait_until(fun() -> length(log_lines(Log, Pattern)) >= 3 end, 10000),
    timer:sleep(500),
    Lines = log_lines(Log, Pattern),
    ct:log("~p", [Lines]),
    ?assert(length(Lines) =< 4),
    ?assert(lists:any(fun(L) -> binary:match(L, <<"more refusals on this connection">>)
                                    =/= nomatch end, Lines)),
    ok.

%% TLS: trust by the certificate's subject; a peer of the same CA with
%% another subject keeps the default policy.
trust_by_certificate_subject(Config) ->
    Confs = ?config(confs, Config),
    Conf = fun(N) -> ["-ktls_filter_optfile", proplists:get_value(N, Confs)] end,
    {_T, TNode} = start("t", Conf("target") ++ trust([{cert_subject, "*/CN=ops@*"}])),
    {O, _} = start("o", Conf("ops")),
    {U, _} = start("u", Conf("app")),
    [Mem | _] = observer_calls(O, TNode),
    ?assert(is_list(Mem)),
    [R | _] = observer_calls(U, TNode),
    ?assertMatch({'EXIT', {exception, unauthorized}}, R),
    ok.

%% TLS: trust by an operator CA (the node accepts both CAs; only the
%% operator CA's certificates are trusted).
trust_by_operator_ca(Config) ->
    Confs = ?config(confs, Config),
    Conf = fun(N) -> ["-ktls_filter_optfile", proplists:get_value(N, Confs)] end,
    {T, TNode} = start("t", Conf("target") ++ trust([{cert_issuer, ?config(ops_ca, Config)}])),
    {A, ANode} = start("admin", Conf("admin")),
    {U, _} = start("u", Conf("ops")),  % CN=ops, but from the production CA
    [Mem | _] = observer_calls(A, TNode),
    ?assert(is_list(Mem)),
    [R | _] = observer_calls(U, TNode),
    ?assertMatch({'EXIT', {exception, unauthorized}}, R),
    [C] = [C || {N, C} <- ktls_ct_nodes:call(T, ktls_filter, channel_list, []), N =:= ANode],
    #{trusted := Rule, tls := #{peer_subject := <<"/CN=admin@127.0.0.1">>}} =
        ktls_ct_nodes:call(T, ktls_filter, channel_inspect, [C]),
    ?assertNotEqual(nomatch, binary:match(Rule, <<"cert_issuer">>)),
    ok.

%% Rules that cannot work are start-up errors naming the option.
bad_rules_are_refused(_Config) ->
    Erl = "erl -noshell -pa " ++ ktls_ct_nodes:ebin() ++ " -proto_dist ktls_filter -name bad_"
        ++ integer_to_list(erlang:unique_integer([positive])) ++ "@127.0.0.1 ",
    Out1 = os:cmd(Erl ++ "-ktls_filter trusted_peers '[{cert_issuer, \"/nonexistent.pem\"}]' "
                  "-eval 'halt()' 2>&1"),
    ct:log("~ts", [Out1]),
    ?assertNotEqual(nomatch, string:find(Out1, "trusted_peers")),
    ?assertNotEqual(nomatch, string:find(Out1, "cert_issuer file /nonexistent.pem, which cannot be read")),
    Out2 = os:cmd(Erl ++ "-ktls_filter trusted_peers '[{host, \"x\"}]' -eval 'halt()' 2>&1"),
    ?assertNotEqual(nomatch, string:find(Out2, "trusted_peers")),
    ok.
