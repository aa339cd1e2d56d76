%% TLS for -proto_dist ktls_filter on real OTP 25 nodes: ktls_filter pairs,
%% stock inet_tls_dist peers both ways with TLS 1.2 and 1.3, a mixed cluster
%% and a rolling migration, and bad input (plain peers, another CA, a
%% version the file does not allow, a certificate for another host with
%% verify_node_name, a stalled handshake, bad option files). Certificates
%% come from ./ktls certs (openssl), made in the suite's priv_dir.
%%
%% On this machine the kernel has no TLS module: the user-space record
%% layer carries everything and the fallback reason is asserted; on a
%% kernel with kTLS the same cases assert the kernel took both directions.
-module(ktls_tls_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2,
         end_per_testcase/2]).
-export([ktls_pair_tls13/1, reconnect_resumes_the_session/1, boot_with_ssl_dist_optfile/1, stock_tls12_both_ways/1,
         stock_tls13_both_ways/1, mixed_cluster_rolling_migration/1, plain_peer_refused/1,
         other_ca_refused/1, version_not_allowed_refused/1, verify_node_name/1,
         stalled_handshake_times_out/1, failed_handshakes_leave_nothing/1,
         ktls_required/1, bad_option_files/1, command_line_wins_over_optfile/1,
         client_checks_the_server_host/1]).
-export([capture_logs/0, captured/0, log/2]).

suite() -> [{timetrap, {minutes, 4}}].

all() ->
    [ktls_pair_tls13, reconnect_resumes_the_session, boot_with_ssl_dist_optfile, stock_tls12_both_ways, stock_tls13_both_ways,
     mixed_cluster_rolling_migration, plain_peer_refused, other_ca_refused,
     version_not_allowed_refused, verify_node_name, stalled_handshake_times_out,
     failed_handshakes_leave_nothing, ktls_required, bad_option_files,
     command_line_wins_over_optfile, client_checks_the_server_host].

init_per_suite(Config) ->
    Dir = ?config(priv_dir, Config),
    Certs = fun(Sub, Env, Names) ->
                    D = filename:join(Dir, Sub),
                    Cmd = Env ++ " " ++ filename:join([ktls_ct_nodes:root(), "tools", "certs.sh"])
                        ++ " " ++ D ++ " " ++ lists:join(" ", Names) ++ " 2>&1",
                    Out = os:cmd(Cmd),
                    ct:log("~ts~n~ts", [Cmd, Out]),
                    D
            end,
    Main = Certs("main", "", ["node@127.0.0.1", "wrong@elsewhere.example"]),
    Tls13 = Certs("tls13", "KTLS_CERTS_VERSIONS=\"'tlsv1.3'\"", ["node@127.0.0.1"]),
    Stranger = Certs("stranger", "", ["node@127.0.0.1"]),
    [{main, Main}, {tls13, Tls13}, {stranger, Stranger} | Config].

end_per_suite(_Config) ->
    ok.

init_per_testcase(_TC, Config) ->
    Config.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

%% ------------------------------------------------------------------
%% Helpers
%% ------------------------------------------------------------------

conf(Config, Set) -> conf(Config, Set, "node").
conf(Config, Set, Name) -> filename:join(?config(Set, Config), Name ++ ".conf").

%% A ktls_filter node with TLS options from `-ktls_filter_optfile'.
ktls(Name, Conf) -> ktls(Name, Conf, []).
ktls(Name, Conf, Extra) ->
    start(Name, ktls, ["-ktls_filter_optfile", Conf | allow()] ++ Extra).

%% A stock inet_tls_dist node.
stock(Name, Conf) ->
    start(Name, inet_tls, ["-ssl_dist_optfile", Conf]).

start(Name, Carrier, Args) ->
    {P, N} = ktls_ct_nodes:start(ktls_ct_nodes:unique(Name), Carrier, Args),
    ktls_ct_nodes:track(P),
    {P, N}.

%% The suite tests the carrier, not the policy: erpc to lists is allowed.
allow() ->
    ktls_ct_nodes:allow_mfa_args([{lists, '_', '_'}, {erlang, node, 0}]).

call(P, M, F, A) -> ktls_ct_nodes:call(P, M, F, A).

%% The TLS map of the one connection of a ktls_filter node.
tls_of(P) ->
    [#{tls := Tls}] = call(P, ktls_filter, connections, []),
    Tls.

%% Pings both ways and exchanges data through erpc.
connected(P1, N1, P2, N2) ->
    pong = call(P1, net_adm, ping, [N2]),
    [1, 2, 3] = call(P1, erpc, call, [N2, lists, seq, [1, 3]]),
    N1 = call(P2, erpc, call, [N1, erlang, node, []]),
    ok.

%% Either the kernel took both directions, or the reason why not is kept
%% (on this machine: no TLS module).
kernel_or_reason(#{kernel_tx := Tx, kernel_rx := Rx, kernel_fallback := Why}) ->
    case Tx andalso Rx of
        true -> ?assertEqual(undefined, Why);
        false -> ?assert(is_binary(Why) andalso byte_size(Why) > 0)
    end.

%% On a node: log events from now on are kept (captured/0), formatted.
-spec capture_logs() -> ok.
capture_logs() ->
    Self = self(),
    Pid = spawn(fun() ->
                        register(ktls_tls_log, self()),
                        Self ! registered,
                        keep([])
                end),
    receive registered -> ok end,
    ok = logger:add_handler(ktls_tls_log, ?MODULE, #{config => #{pid => Pid}}).

keep(Lines) ->
    receive
        {line, L} -> keep([L | Lines]);
        {get, From} -> From ! {lines, lists:reverse(Lines)}, keep(Lines)
    end.

-spec captured() -> [string()].
captured() ->
    ktls_tls_log ! {get, self()},
    receive {lines, L} -> L after 5000 -> [] end.

%% logger handler callback of capture_logs/0.
-spec log(logger:log_event(), logger:handler_config()) -> ok.
log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {string, S} -> S;
               {report, R} -> io_lib:format("~tp", [R]);
               {Format, Args} -> io_lib:format(Format, Args)
           end,
    Pid ! {line, lists:flatten(Text)},
    ok.

failure_reasons(P) ->
    #{tls_failure_reasons := R} = call(P, ktls_filter, carrier_stats, []),
    maps:keys(R).

has_reason(P, Text) ->
    lists:any(fun(R) -> string:find(R, Text) =/= nomatch end, failure_reasons(P)).

wait_reason(P, Text) ->
    case ktls_ct_nodes:wait_until(fun() -> has_reason(P, Text) end, 10000) of
        ok -> ok;
        timeout -> ct:fail({no_failure_reason, Text, failure_reasons(P)})
    end.

port_of(Node) ->
    [Name, _] = string:split(atom_to_list(Node), "@"),
    {port, Port, _} = erl_epmd:port_please(Name, {127, 0, 0, 1}),
    Port.

%% ------------------------------------------------------------------
%% Cases
%% ------------------------------------------------------------------

ktls_pair_tls13(Config) ->
    C = conf(Config, main),
    {A, NA} = ktls("a", C),
    {B, NB} = ktls("b", C),
    ok = connected(A, NA, B, NB),
    Tls = tls_of(A),
    ct:log("~p", [Tls]),
    #{protocol := 'tlsv1.3', cipher := <<"TLS_", _/binary>>, peer_subject := Subject,
      peer_certificate := Der} = Tls,
    ?assertNotEqual(nomatch, string:find(Subject, "CN=node@127.0.0.1")),
    ?assert(is_binary(Der)),
    kernel_or_reason(Tls),
    %% 8 MiB each way through the record layer, byte-exact.
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    Big = call(A, erpc, call, [NB, lists, last, [[Big]]]),
    #{records_out := Out, records_in := In} = tls_of(A),
    ?assert(Out > 100 andalso In > 100),
    #{tls_handshakes := H, tls_handshake_failures := 0, ktls_installs := K,
      ktls_fallbacks := F} = call(A, ktls_filter, carrier_stats, []),
    ?assertEqual(H, K + F),
    ?assert(H >= 1),
    %% channel_inspect has it too.
    #{tls := #{protocol := 'tlsv1.3'}} = call(A, ktls_filter, channel_inspect, [NB]),
    ok.

%% TLS 1.3 resumption: A's second connection to B resumes the session of
%% the first (ticket), both ends say so and count it, traffic is
%% byte-exact, and the certificate seen is the one of the full handshake.
%% A client file with {session_tickets, disabled} resumes nothing.
reconnect_resumes_the_session(Config) ->
    C = conf(Config, main),
    {A, NA} = ktls("a", C),
    {B, NB} = ktls("b", C),
    Reconnect = fun() ->
                        true = call(A, net_kernel, disconnect, [NB]),
                        ok = ktls_ct_nodes:wait_until(
                               fun() -> call(B, erlang, nodes, []) =:= [] end, 10000),
                        ok = connected(A, NA, B, NB)
                end,
    ok = connected(A, NA, B, NB),
    #{resumed := false} = tls_of(A),
    Reconnect(),
    #{resumed := true, protocol := 'tlsv1.3', peer_subject := Subject} = TlsA = tls_of(A),
    ?assertNotEqual(nomatch, string:find(Subject, "CN=node@127.0.0.1")),
    kernel_or_reason(TlsA),
    #{resumed := true} = tls_of(B),
    Big = crypto:strong_rand_bytes(4 * 1024 * 1024),
    Big = call(A, erpc, call, [NB, lists, last, [[Big]]]),
    Big = call(B, erpc, call, [NA, lists, last, [[Big]]]),
    Reconnect(),
    #{resumed := true} = tls_of(A),
    #{tls_resumptions := 2, tls_handshakes := 3} = call(A, ktls_filter, carrier_stats, []),
    #{tls_resumptions := 2} = call(B, ktls_filter, carrier_stats, []),
    %% A client that turns tickets off: full handshakes only.
    {ok, [Opts]} = file:consult(C),
    Client = proplists:get_value(client, Opts),
    NoTickets = filename:join(?config(priv_dir, Config), "no_tickets.conf"),
    ok = file:write_file(NoTickets,
                         io_lib:format("~p.~n", [[{server, proplists:get_value(server, Opts)},
                                                  {client, [{session_tickets, disabled}
                                                            | Client]}]])),
    {D, ND} = ktls("d", NoTickets),
    ok = connected(D, ND, B, NB),
    true = call(D, net_kernel, disconnect, [NB]),
    ok = ktls_ct_nodes:wait_until(fun() -> not lists:member(ND, call(B, erlang, nodes, [])) end,
                                  10000),
    ok = connected(D, ND, B, NB),
    #{resumed := false} = tls_of(D),
    #{tls_resumptions := 0} = call(D, ktls_filter, carrier_stats, []),
    ok.

%% inet_tls_dist's command line, unchanged, with -proto_dist ktls_filter:
%% the options file is read at boot (-name), before kernel's file server.
boot_with_ssl_dist_optfile(Config) ->
    C = conf(Config, main),
    {A, NA} = start("a", ktls, ["-ssl_dist_optfile", C | allow()]),
    {B, NB} = start("b", ktls, ["-ssl_dist_optfile", C | allow()]),
    ok = connected(A, NA, B, NB),
    #{protocol := 'tlsv1.3'} = tls_of(A),
    #{tls_source := Source} = call(A, ktls_filter, config_get, []),
    ?assertNotEqual(nomatch, string:find(Source, "-ssl_dist_optfile")),
    ok.

%% A stock node's file without `versions': inet_tls_dist speaks TLS 1.2.
stock_tls12_both_ways(Config) ->
    both_ways(conf(Config, main), 'tlsv1.2').

stock_tls13_both_ways(Config) ->
    both_ways(conf(Config, tls13), 'tlsv1.3').

both_ways(Conf, Version) ->
    {K, NK} = ktls("k", Conf),
    {S, NS} = stock("s", Conf),
    %% The stock node connects.
    ok = connected(S, NS, K, NK),
    #{protocol := Version} = tls_of(K),
    kernel_or_reason(tls_of(K)),
    true = call(K, net_kernel, disconnect, [NS]),
    ok = ktls_ct_nodes:wait_until(fun() -> call(S, erlang, nodes, []) =:= [] end, 10000),
    %% The ktls_filter node connects.
    ok = connected(K, NK, S, NS),
    #{protocol := Version} = tls_of(K),
    Big = crypto:strong_rand_bytes(4 * 1024 * 1024),
    Big = call(K, erpc, call, [NS, lists, last, [[Big]]]),
    Big = call(S, erpc, call, [NK, lists, last, [[Big]]]),
    ok.

%% Three stock inet_tls_dist nodes; each in turn is replaced by a
%% ktls_filter node of the same name and certificate; the full mesh works
%% at every step.
mixed_cluster_rolling_migration(Config) ->
    Conf = conf(Config, main),
    Names = [ktls_ct_nodes:unique(N) || N <- ["m1", "m2", "m3"]],
    Stock = [begin
                 {P, N} = ktls_ct_nodes:start(Name, inet_tls, ["-ssl_dist_optfile", Conf]),
                 ktls_ct_nodes:track(P),
                 {P, N}
             end || Name <- Names],
    ok = mesh(Stock),
    Final = lists:foldl(
              fun(I, Nodes) ->
                      {OldP, _} = lists:nth(I, Nodes),
                      ktls_ct_nodes:stop(OldP),
                      {P, N} = ktls_ct_nodes:start(lists:nth(I, Names), ktls,
                                                   ["-ktls_filter_optfile", Conf | allow()]),
                      ktls_ct_nodes:track(P),
                      New = lists:sublist(Nodes, I - 1) ++ [{P, N}] ++ lists:nthtail(I, Nodes),
                      ok = mesh(New),
                      ct:log("step ~w: ~p", [I, [call(Q, erlang, nodes, []) || {Q, _} <- New]]),
                      New
              end, Stock, [1, 2, 3]),
    [2 = length(call(P, ktls_filter, connections, [])) || {P, _} <- Final],
    ok.

mesh(Nodes) ->
    [ok = connected(P1, N1, P2, N2) || {P1, N1} <- Nodes, {P2, N2} <- Nodes, N1 < N2],
    ok.

%% A node without TLS against a TLS node: refused both ways, reason named,
%% and the TLS node keeps serving TLS peers.
plain_peer_refused(Config) ->
    C = conf(Config, main),
    {K, NK} = ktls("k", C),
    {P, NP} = start("p", ktls, allow()),
    pang = call(P, net_adm, ping, [NK]),
    wait_reason(K, "plain distribution handshake"),
    pang = call(K, net_adm, ping, [NP]),
    wait_reason(K, "the peer closed the connection before any TLS record"),
    {B, NB} = ktls("b", C),
    ok = connected(B, NB, K, NK),
    ok.

other_ca_refused(Config) ->
    {K, NK} = ktls("k", conf(Config, main)),
    {X, NX} = ktls("x", conf(Config, stranger)),
    pang = call(X, net_adm, ping, [NK]),
    pang = call(K, net_adm, ping, [NX]),
    wait_reason(K, "certificate verify failed"),
    ?assert(has_reason(K, "unknown ca") orelse has_reason(X, "unknown ca")),
    ok.

%% The ktls_filter node allows TLS 1.3 only; a stock node without
%% `versions' offers TLS 1.2 only.
version_not_allowed_refused(Config) ->
    {K, NK} = ktls("k", conf(Config, tls13)),
    {S, NS} = stock("s", conf(Config, main)),
    pang = call(S, net_adm, ping, [NK]),
    wait_reason(K, "unsupported protocol"),
    pang = call(K, net_adm, ping, [NS]),
    ok.

%% verify_node_name: a certificate for elsewhere.example on a node at
%% 127.0.0.1 is refused both ways; the right certificate passes.
%% Each refusal is one log line that names the peer and the reason (the
%% close that follows it is not logged again).
verify_node_name(Config) ->
    Bind = ["-ktls_filter", "verify_node_name", "true"],
    {K, NK} = ktls("k", conf(Config, main), Bind),
    ok = call(K, ?MODULE, capture_logs, []),
    {W, NW} = ktls("w", conf(Config, main, "wrong")),
    pang = call(W, net_adm, ping, [NK]),
    pang = call(K, net_adm, ping, [NW]),
    #{tls_node_name_refusals := 2} = call(K, ktls_filter, carrier_stats, []),
    Lines = fun() -> [L || L <- call(K, ?MODULE, captured, []),
                           string:find(L, "ktls_filter: ") =/= nomatch] end,
    ok = ktls_ct_nodes:wait_until(fun() -> length(Lines()) >= 2 end, 5000),
    timer:sleep(500),  % a second line for either connection would be here by now
    [_, _] = Refused = Lines(),
    ct:log("~p", [Refused]),
    [?assert(string:find(L, "does not name its host") =/= nomatch andalso
             string:find(L, "127.0.0.1:") =/= nomatch) || L <- Refused],
    {B, NB} = ktls("b", conf(Config, main), Bind),
    ok = connected(B, NB, K, NK),
    ok.

stalled_handshake_times_out(Config) ->
    {K, NK} = ktls("k", conf(Config, main), ["-ktls_filter", "tls_handshake_timeout", "500"]),
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, port_of(NK), [binary, {active, false}]),
    T0 = erlang:monotonic_time(millisecond),
    {error, closed} = gen_tcp:recv(S, 0, 5000),
    Waited = erlang:monotonic_time(millisecond) - T0,
    ?assert(Waited >= 400 andalso Waited < 4000),
    wait_reason(K, "no handshake within 500 ms"),
    %% The default limit ends before net_setuptime (3 s on the suite's
    %% nodes), so the carrier closes the stalled peer and counts it, not
    %% dist_util's setup timer.
    {D, ND} = ktls("d", conf(Config, main)),
    {ok, S2} = gen_tcp:connect({127, 0, 0, 1}, port_of(ND), [binary, {active, false}]),
    {error, closed} = gen_tcp:recv(S2, 0, 5000),
    wait_reason(D, "no handshake within 2000 ms"),
    ok.

%% Garbage and plain handshakes at a TLS node: no descriptors or carrier
%% connections left behind, the node serves TLS peers afterwards.
failed_handshakes_leave_nothing(Config) ->
    {K, NK} = ktls("k", conf(Config, main)),
    Port = port_of(NK),
    Round = fun() ->
                    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
                    ok = gen_tcp:send(S, <<0, 5, $n, 1, 2, 3, 4>>),
                    {error, closed} = gen_tcp:recv(S, 0, 5000),
                    gen_tcp:close(S)
            end,
    [Round() || _ <- lists:seq(1, 50)],
    Fds = ktls_ct_nodes:fd_count(K),
    [Round() || _ <- lists:seq(1, 300)],
    ok = ktls_ct_nodes:wait_until(fun() -> ktls_ct_nodes:fd_count(K) =< Fds end, 5000),
    #{connections_open := 0, tls_handshake_failures := Failures} =
        call(K, ktls_filter, carrier_stats, []),
    ?assertEqual(350, Failures),
    {B, NB} = ktls("b", conf(Config, main)),
    ok = connected(B, NB, K, NK),
    ok.

%% ktls required: refused with the reason where the kernel cannot take the
%% record layer (this machine), carried by the kernel where it can.
ktls_required(Config) ->
    C = conf(Config, main),
    Required = ["-ktls_filter", "ktls", "required"],
    %% A kernel without a TLS module: the node does not start, saying why.
    Out = os:cmd("timeout 30 " ++ filename:join(ktls_ct_nodes:root(), "ktls") ++ " erl -name " ++
                     ktls_ct_nodes:unique("req") ++ "@127.0.0.1 -noshell -ktls_filter_optfile " ++
                     C ++ " -ktls_filter ktls required -eval 'halt()' 2>&1"),
    ct:log("~ts", [Out]),
    case string:find(Out, "carrier failed to start: kernel TLS is required (ktls required), "
                          "but the kernel has no TLS module") of
        nomatch -> ktls_required_connects(C, Required);
        _ -> ok
    end.

%% A kernel with kTLS (the QEMU guest): connections are in the kernel, or
%% refused with the reason.
ktls_required_connects(C, Required) ->
    {K, NK} = ktls("k", C, Required),
    {B, _NB} = ktls("b", C, Required),
    case call(B, net_adm, ping, [NK]) of
        pang ->
            wait_reason(K, "kernel TLS is required");
        pong ->
            #{kernel_tx := true, kernel_rx := true} = tls_of(K)
    end,
    ok.

%% Option files that are wrong stop the node at start with a message that
%% names the problem.
bad_option_files(Config) ->
    Dir = ?config(priv_dir, Config),
    Main = ?config(main, Config),
    Pem = fun(F) -> filename:join(Main, F) end,
    Good = [{certfile, Pem("node.pem")}, {keyfile, Pem("node.key")},
            {cacertfile, Pem("ca.pem")}],
    Cases =
        [{[{server, [{verify_fun, {fun erlang:is_atom/1, []}} | Good]}, {client, Good}],
          "unsupported ssl option verify_fun"},
         {[{server, [{versions, ['tlsv1.1']} | Good]}, {client, Good}],
          "versions: ['tlsv1.1'] not supported"},
         {[{server, [{certfile, "/nonexistent.pem"} | tl(Good)]}, {client, Good}],
          "certfile /nonexistent.pem"},
         {[{server, Good}], "give both server and client"},
         {[{server, [{ciphers, ["AES128-SHA"]} | Good]}, {client, Good}],
          "AES-GCM and ChaCha20-Poly1305 only"},
         {[{server, Good}, {client, Good}, {bogus_key, 1}], "bogus_key"}],
    Ktls = filename:join(ktls_ct_nodes:root(), "ktls"),
    lists:foreach(
      fun({I, {Terms, Expect}}) ->
              File = filename:join(Dir, "bad" ++ integer_to_list(I) ++ ".conf"),
              ok = file:write_file(File, io_lib:format("~tp.~n", [Terms])),
              Out = os:cmd("timeout 30 " ++ Ktls ++ " erl -name " ++
                               ktls_ct_nodes:unique("bad") ++ "@127.0.0.1 -noshell "
                           "-ktls_filter_optfile " ++ File ++ " -eval 'halt()' 2>&1"),
              ct:log("~ts~n~ts", [Expect, Out]),
              ?assertNotEqual(nomatch, string:find(Out, Expect))
      end, lists:zip(lists:seq(1, length(Cases)), Cases)),
    %% Two sources of TLS options: which one was meant?
    C = conf(Config, main),
    Out = os:cmd("timeout 30 " ++ Ktls ++ " erl -name " ++ ktls_ct_nodes:unique("bad") ++
                     "@127.0.0.1 -noshell -ssl_dist_optfile " ++ C ++ " -ktls_filter_optfile " ++
                     C ++ " -eval 'halt()' 2>&1"),
    ct:log("~ts", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "TLS options are given more than once")),
    %% ktls_filter's own options do not go in an ssl_dist_optfile.
    Own = filename:join(Dir, "own.conf"),
    {ok, [Sides]} = file:consult(C),
    ok = file:write_file(Own, io_lib:format("~tp.~n", [Sides ++ [{filter_mode, monitor}]])),
    Out2 = os:cmd("timeout 30 " ++ Ktls ++ " erl -name " ++ ktls_ct_nodes:unique("bad") ++
                      "@127.0.0.1 -noshell -ssl_dist_optfile " ++ Own ++ " -eval 'halt()' 2>&1"),
    ct:log("~ts", [Out2]),
    ?assertNotEqual(nomatch, string:find(Out2, "filter_mode is not an ssl_dist_optfile entry")),
    %% An -ssl_dist_optfile always means TLS: an empty one, or one without
    %% the sides, is an error, never plain TCP; a side given twice too.
    Empty = filename:join(Dir, "empty.conf"),
    Nil = filename:join(Dir, "nil.conf"),
    Twice = filename:join(Dir, "twice.conf"),
    ok = file:write_file(Empty, ""),
    ok = file:write_file(Nil, "[].\n"),
    ok = file:write_file(Twice, io_lib:format("~tp.~n", [Sides ++ [hd(Sides)]])),
    [begin
         O = os:cmd("timeout 30 " ++ Ktls ++ " erl -name " ++ ktls_ct_nodes:unique("bad") ++
                        "@127.0.0.1 -noshell -ssl_dist_optfile " ++ F ++ " -eval 'halt()' 2>&1"),
         ct:log("~ts~n~ts", [F, O]),
         ?assertNotEqual(nomatch, string:find(O, Expect))
     end || {F, Expect} <- [{Empty, "no {server, SslOptions} and {client, SslOptions}"},
                            {Nil, "no {server, SslOptions} and {client, SslOptions}"},
                            {Twice, "is given more than once"}]],
    ok.

%% As ssl's client (and so inet_tls_dist's), a ktls_filter client checks
%% the server's certificate against the host of the node it connects to,
%% without verify_node_name; {server_name_indication, disable} in the client
%% options turns the check off, as in ssl. A stock client refuses the same
%% server.
client_checks_the_server_host(Config) ->
    {_W, NW} = ktls("w", conf(Config, main, "wrong")),  % a certificate for elsewhere.example
    {K, _} = ktls("k", conf(Config, main)),
    pang = call(K, net_adm, ping, [NW]),
    #{tls_node_name_refusals := 1} = call(K, ktls_filter, carrier_stats, []),
    {S, _} = stock("s", conf(Config, main)),
    pang = call(S, net_adm, ping, [NW]),
    File = filename:join(?config(priv_dir, Config), "no_host_check.conf"),
    {ok, [[{server, SOpts}, {client, COpts}]]} = file:consult(conf(Config, main)),
    ok = file:write_file(File, io_lib:format("~tp.~n", [[{server, SOpts},
                                                        {client, [{server_name_indication,
                                                                   disable} | COpts]}]])),
    {D, _} = ktls("d", File),
    pong = call(D, net_adm, ping, [NW]),
    ok.

%% Where an option is given twice, the command line wins over the optfile.
command_line_wins_over_optfile(Config) ->
    File = filename:join(?config(priv_dir, Config), "monitor.conf"),
    {ok, [Sides]} = file:consult(conf(Config, main)),
    ok = file:write_file(File, io_lib:format("~tp.~n", [Sides ++ [{filter_mode, monitor}]])),
    {F, _} = start("f", ktls, ["-ktls_filter_optfile", File]),
    monitor = call(F, ktls_filter_config, get, [filter_mode]),
    {E, _} = start("e", ktls, ["-ktls_filter_optfile", File, "-ktls_filter", "filter_mode",
                               "enforce"]),
    enforce = call(E, ktls_filter_config, get, [filter_mode]),
    ok.
