%% The operator tools against real nodes: `./ktls epmd-register' for a node
%% without epmd (an epmd this suite starts on its own port and kills), and
%% `./ktls remsh' to stock inet_tcp and inet_tls nodes and to a ktls_filter
%% node with TLS, `./ktls cluster', and `./ktls build' under running nodes.
-module(ktls_tools_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("kernel/include/file.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1, end_per_testcase/2]).
-export([epmd_register_epmdless_node/1, remsh_stock_inet_tcp/1, remsh_stock_inet_tls/1,
         remsh_ktls_tls/1, cluster_run_starts_and_stops_nodes/1, cluster_up_status_down/1,
         build_under_running_nodes/1]).

suite() -> [{timetrap, {minutes, 3}}].

all() ->
    [epmd_register_epmdless_node, remsh_stock_inet_tcp, remsh_stock_inet_tls,
     remsh_ktls_tls, cluster_run_starts_and_stops_nodes, cluster_up_status_down,
     build_under_running_nodes].

init_per_suite(Config) ->
    Dir = filename:join(?config(priv_dir, Config), "pki"),
    Out = os:cmd(filename:join([ktls_ct_nodes:root(), "tools", "certs.sh"]) ++ " " ++ Dir ++
                     " node@127.0.0.1 2>&1"),
    ct:log("~ts", [Out]),
    [{conf, filename:join(Dir, "node.conf")} | Config].

end_per_suite(_Config) ->
    ok.

end_per_testcase(_TC, _Config) ->
    ktls_ct_nodes:stop_tracked().

ktls() -> filename:join(ktls_ct_nodes:root(), "ktls").

%% ------------------------------------------------------------------
%% epmd-register
%% ------------------------------------------------------------------

start_epmd(P) ->
    os:cmd(lists:flatten(io_lib:format("ERL_EPMD_ADDRESS=127.0.0.1 epmd -port ~w -daemon", [P]))),
    ok = ktls_ct_nodes:wait_until(fun() -> names(P) =/= down end, 5000).

kill_epmd(P) ->
    os:cmd(lists:flatten(io_lib:format("pkill -f 'epmd -port ~w -daemon'", [P]))),
    ok = ktls_ct_nodes:wait_until(fun() -> names(P) =:= down end, 5000).

%% [{Name, Port}] that the epmd on port P knows, or down.
names(P) ->
    Out = os:cmd(lists:flatten(io_lib:format("epmd -port ~w -names 2>&1", [P]))),
    case string:find(Out, "up and running") of
        nomatch -> down;
        _ -> [{N, list_to_integer(Port)} ||
                     L <- string:split(Out, "\n", all),
                     {match, [N, Port]} <- [re:run(L, "^name (\\S+) at port (\\d+)",
                                                   [{capture, all_but_first, list}])]]
    end.

known(P, Name) -> lists:keyfind(Name, 1, case names(P) of down -> []; L -> L end).

%% A node that runs without epmd is not in epmd; epmd-register makes it
%% findable by ordinary nodes that ask epmd, and registers it again after
%% an epmd restart (the node cannot: it has no epmd client). The epmd is
%% the suite's own, on its own port.
epmd_register_epmdless_node(_Config) ->
    P = ktls_ct_nodes:free_port(),  % our own epmd: killed here, never the shared one
    start_epmd(P),
    Env = [{"ERL_EPMD_PORT", integer_to_list(P)}],
    Name = ktls_ct_nodes:unique("lost"),
    DistPort = ktls_ct_nodes:free_port(),
    {S, Node} = ktls_ct_nodes:start(Name, epmdless,
                                    ["-ktls_filter_port", integer_to_list(DistPort)]),
    ktls_ct_nodes:track(S),
    false = known(P, Name),
    Reg = open_port({spawn_executable, ktls()},
                    [{args, ["epmd-register", Name, integer_to_list(DistPort),
                             "--epmd-port", integer_to_list(P), "--duration", "120"]},
                     {env, [{"KTLS_ROOT", ktls_ct_nodes:root()}]},
                     stderr_to_stdout, exit_status, binary]),
    try
        ok = ktls_ct_nodes:wait_until(fun() -> known(P, Name) =:= {Name, DistPort} end, 10000),
        %% An ordinary node that asks this epmd reaches it.
        {ok, C, _} = peer:start(#{name => ktls_ct_nodes:unique("finder"), host => "127.0.0.1",
                                  longnames => true, connection => standard_io, env => Env,
                                  args => ["-setcookie", atom_to_list(ktls_ct_nodes:cookie()),
                                           "-proto_dist", "inet_tcp"]}),
        ktls_ct_nodes:track(C),
        pong = peer:call(C, net_adm, ping, [Node]),
        %% epmd restarted: registered again by the command.
        kill_epmd(P),
        start_epmd(P),
        ok = ktls_ct_nodes:wait_until(fun() -> known(P, Name) =:= {Name, DistPort} end, 10000),
        ct:log("~ts", [drain(Reg)])
    after
        catch port_close(Reg),
        kill_epmd(P)
    end,
    ok.

drain(Port) ->
    receive {Port, {data, D}} -> [D | drain(Port)]
    after 0 -> []
    end.

%% ------------------------------------------------------------------
%% remsh
%% ------------------------------------------------------------------


%% A node listening on a fixed port (no epmd needed by the shell).
target(Name, Args) ->
    Port = ktls_ct_nodes:free_port(),
    FullName = ktls_ct_nodes:unique(Name),
    {ok, P, Node} = peer:start(#{name => FullName, host => "127.0.0.1", longnames => true,
                                 connection => standard_io,
                                 args => ["-setcookie", atom_to_list(ktls_ct_nodes:cookie()),
                                          "-kernel", "inet_dist_listen_min",
                                          integer_to_list(Port), "-kernel",
                                          "inet_dist_listen_max", integer_to_list(Port)
                                          | ["-pa", ktls_ct_nodes:ebin() | Args]]}),
    ktls_ct_nodes:track(P),
    ok = peer:call(P, persistent_term, put, [ktls_remsh_marker, remsh_marker_value]),
    {Node, Port}.

remsh(Node, Port, Extra) ->
    Out = ktls_ct_nodes:remsh(Node, Port, Extra),
    ct:log("~ts", [Out]),
    Expect = lists:flatten(io_lib:format("MARK:~p:remsh_marker_value", [Node])),
    ?assertNotEqual(nomatch, string:find(Out, Expect)).

remsh_stock_inet_tcp(_Config) ->
    {Node, Port} = target("stock", ["-proto_dist", "inet_tcp"]),
    remsh(Node, Port, "--carrier inet_tcp").

remsh_stock_inet_tls(Config) ->
    Conf = ?config(conf, Config),
    {Node, Port} = target("stocktls", ["-proto_dist", "inet_tls", "-ssl_dist_optfile", Conf]),
    remsh(Node, Port, "--carrier inet_tls --tls " ++ Conf).

%% A ktls_filter node with TLS whose policy allows the shell.
remsh_ktls_tls(Config) ->
    Conf = ?config(conf, Config),
    {Node, Port} = target("ktlstls", ["-proto_dist", "ktls_filter", "-ktls_filter_optfile", Conf |
                                      ktls_ct_nodes:allow_mfa_args(
                                        [{shell, start, '_'}, {edlin_expand, expand, '_'}])]),
    remsh(Node, Port, "--tls " ++ Conf).

%% ------------------------------------------------------------------
%% cluster
%% ------------------------------------------------------------------

cluster(Config, Args) ->
    Dir = filename:join(?config(priv_dir, Config), "cluster"),
    Cmd = "KTLS_CLUSTER_DIR=" ++ Dir ++ " timeout 300 " ++ ktls() ++ " cluster " ++ Args ++
        " 2>&1; echo EXIT=$?",
    Out = os:cmd(Cmd),
    ct:log("~ts~n~ts", [Cmd, Out]),
    {Out, Dir}.

beams_in(Dir) ->
    string:trim(os:cmd("pgrep -f -- '-ktls_filter_optfile " ++ Dir ++ "' | wc -l")).

%% `run' with no cluster up starts three TLS nodes, runs, and stops them.
cluster_run_starts_and_stops_nodes(Config) ->
    {Out, Dir} = cluster(Config, "run traffic 2"),
    ?assertNotEqual(nomatch, string:find(Out, "full mesh: yes")),
    ?assertNotEqual(nomatch, string:find(Out, "| node3@127.0.0.1 |")),
    ?assertNotEqual(nomatch, string:find(Out, "tlsv1.3")),
    ?assertNotEqual(nomatch, string:find(Out, "cluster: stopped 3 nodes")),
    ?assertNotEqual(nomatch, string:find(Out, "EXIT=0")),
    "0" = beams_in(Dir),
    ok.

cluster_up_status_down(Config) ->
    {Up, Dir} = cluster(Config, "up 2 --plain"),
    ?assertNotEqual(nomatch, string:find(Up, "cluster: 2 nodes (plain)")),
    try
        {Again, _} = cluster(Config, "up 2"),
        ?assertNotEqual(nomatch, string:find(Again, "a cluster is up already")),
        {Status, _} = cluster(Config, "status"),
        ?assertNotEqual(nomatch, string:find(Status, "| node2@127.0.0.1 |")),
        %% Each of 2 nodes: 1 mesh peer, 2 connections with the tool's.
        ?assertNotEqual(nomatch, string:find(Status, "| 1 / 2 |")),
        ?assertNotEqual(nomatch, string:find(Status, "plain")),
        {Lat, _} = cluster(Config, "run latency 50"),
        ?assertNotEqual(nomatch, string:find(Lat, "p50 us")),
        ?assertNotEqual(nomatch, string:find(Lat, "EXIT=0"))
    after
        cluster(Config, "down")
    end,
    "0" = beams_in(Dir),
    ok.

%% ------------------------------------------------------------------
%% ./ktls build while nodes run the NIF
%% ------------------------------------------------------------------

%% The new shared library is renamed over the old one, never written into
%% it: nodes that have it mapped keep running, and their connections come
%% up again after the build (writing in place, as cp -f did, faulted them).
build_under_running_nodes(_Config) ->
    So = filename:join([ktls_ct_nodes:root(), "_build", "lib", "ktls_filter", "priv",
                        "ktls_filter_nif.so"]),
    {ok, #file_info{inode = Before}} = file:read_file_info(So),
    {PA, A} = ktls_ct_nodes:start(ktls_ct_nodes:unique("build_a"), ktls),
    {PB, B} = ktls_ct_nodes:start(ktls_ct_nodes:unique("build_b"), ktls),
    ok = ktls_ct_nodes:track(PA),
    ok = ktls_ct_nodes:track(PB),
    pong = peer:call(PA, net_adm, ping, [B]),
    Out = os:cmd("timeout 600 " ++ ktls() ++ " build 2>&1; echo EXIT=$?"),
    ct:log("~ts", [Out]),
    ?assertNotEqual(nomatch, string:find(Out, "EXIT=0")),
    {ok, #file_info{inode = After}} = file:read_file_info(So),
    ?assertNotEqual(Before, After),
    true = peer:call(PA, erlang, disconnect_node, [B]),
    ok = ktls_ct_nodes:wait_until(fun() -> not lists:member(B, peer:call(PA, erlang, nodes, [])) end,
                                  5000),
    pong = peer:call(PA, net_adm, ping, [B]),
    pong = peer:call(PB, net_adm, ping, [A]),
    ok.
