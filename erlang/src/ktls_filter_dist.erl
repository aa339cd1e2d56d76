%% @doc `-proto_dist ktls_filter': the OTP 25 distribution protocol callbacks.
%%
%% Follows the structure of OTP's inet_tcp_dist and the gen_tcp_dist example:
%% an acceptor process per listener, a handshake process per connection that
%% becomes dist_util's connection supervisor, and a process-based controller
%% (`ktls_filter_dist_ctrl') per connection. Bytes move through the carrier
%% (ktls_filter_nif); on the wire this is the same as inet_tcp_dist, or with
%% TLS options (ktls_filter_config) as inet_tls_dist: TLS first (the carrier
%% runs it), then the dist handshake inside it.
-module(ktls_filter_dist).

-export([listen/1, listen/2, accept/1, accept_connection/5, setup/5, close/1,
         select/1, address/0, is_node_name/1, setopts/2, getopts/2, childspecs/0]).

%% internal
-export([accept_loop/2, do_accept/6, do_setup/6]).
%% ktls_filter_socket
-export([conn_setopts/2, conn_getopts/2]).

-include_lib("kernel/include/net_address.hrl").
-include_lib("kernel/include/dist.hrl").
-include_lib("kernel/include/dist_util.hrl").

-define(FAMILY, inet).
-define(PROTOCOL, ktls_filter).
-define(EPMD_DRIVER, inet_tcp).

%% ------------------------------------------------------------------
%% Selection and addresses
%% ------------------------------------------------------------------

%% @doc Called by net_kernel when distribution starts: ktls_filter_sup goes
%% under kernel's net_sup, before net_kernel, and starts the carrier once.
-spec childspecs() -> {ok, [supervisor:child_spec()]}.
childspecs() ->
    {ok, [ktls_filter_sup:child_spec()]}.

-spec select(node()) -> boolean().
select(Node) ->
    case dist_util:split_node(Node) of
        {node, Name, Host} ->
            case address_please(Name, Host) of
                {ok, _Addr} -> true;
                {ok, _Addr, _Port, _Version} -> true;
                _ -> false
            end;
        _ ->
            false
    end.

-spec is_node_name(term()) -> boolean().
is_node_name(Node) when is_atom(Node) ->
    case dist_util:split_node(Node) of
        {node, _, _} -> true;
        _ -> false
    end;
is_node_name(_) ->
    false.

-spec address() -> #net_address{}.
address() ->
    {ok, Host} = inet:gethostname(),
    #net_address{host = Host, protocol = ?PROTOCOL, family = ?FAMILY}.

%% ------------------------------------------------------------------
%% Listening
%% ------------------------------------------------------------------

-spec listen(atom()) -> {ok, {term(), #net_address{}, pos_integer()}} | {error, term()}.
listen(Name) ->
    {ok, Host} = inet:gethostname(),
    listen(Name, Host).

-spec listen(atom(), string()) ->
          {ok, {term(), #net_address{}, pos_integer()}} | {error, term()}.
listen(Name, Host) ->
    case start_carrier() of
        ok ->
            Config = ktls_filter_config:get(),
            {First, Last} = port_range(Name, Host, Config),
            {Ip, Backlog} = listen_address(Config),
            case listen_explained(Ip, First, Last, Backlog, Config) of
                {ok, L} ->
                    {ok, {_Ip, Port} = Addr} = ktls_filter_nif:listener_address(L),
                    NetAddr = (address())#net_address{address = Addr},
                    case register_node(Name, Port) of
                        {ok, Creation} ->
                            {ok, {L, NetAddr, Creation}};
                        Error ->
                            ktls_filter_nif:close_listener(L),
                            Error
                    end;
                Error ->
                    Error
            end;
        {error, _} = Error ->
            Error
    end.

start_carrier() ->
    ktls_filter_carrier:ensure_started().

port_range(Name, Host, Config) ->
    case maps:get(listen_port, Config) of
        0 ->
            case call_epmd(listen_port_please, [Name, Host]) of
                {ok, 0} -> kernel_port_range();
                {ok, Port} -> {Port, Port}
            end;
        Port ->
            {Port, Port}
    end.

%% listen_ip / backlog of ktls_filter, or where they are at their defaults
%% the kernel parameters inet_dist_use_interface and
%% inet_dist_listen_options' {ip, _} and {backlog, _}, as inet_tcp_dist.
listen_address(Config) ->
    ListenOpts = case application:get_env(kernel, inet_dist_listen_options) of
                     {ok, L} when is_list(L) -> L;
                     _ -> []
                 end,
    Ip = case maps:get(listen_ip, Config) of
             {0, 0, 0, 0} ->
                 case application:get_env(kernel, inet_dist_use_interface) of
                     {ok, UseIp} when is_tuple(UseIp) -> UseIp;
                     _ -> proplists:get_value(ip, ListenOpts, {0, 0, 0, 0})
                 end;
             Configured ->
                 Configured
         end,
    Backlog = case maps:get(backlog, Config) of
                  128 -> proplists:get_value(backlog, ListenOpts, 128);
                  B -> B
              end,
    {Ip, Backlog}.

kernel_port_range() ->
    case application:get_env(kernel, inet_dist_listen_min) of
        {ok, N} when is_integer(N) ->
            case application:get_env(kernel, inet_dist_listen_max) of
                {ok, M} when is_integer(M) -> {N, M};
                _ -> {N, N}
            end;
        _ ->
            {0, 0}
    end.

%% do_listen; a failure's reason carries the address, the port(s) and where
%% they came from, {Posix, Text}: net_kernel prints the reason and nothing
%% else ("register/listen error: ..."), and at boot the node stops before
%% the logger would print a line.
listen_explained(Ip, First, Last, Backlog, Config) ->
    case do_listen(Ip, First, Last, Backlog) of
        {ok, _} = Ok ->
            Ok;
        {error, Reason} when is_atom(Reason) ->
            Ports = case {First, Last} of
                        {0, 0} -> "any free port";
                        {P, P} -> io_lib:format("port ~w", [P]);
                        _ -> io_lib:format("ports ~w..~w", [First, Last])
                    end,
            {error, {Reason, lists:flatten(
                               io_lib:format("ktls_filter cannot listen on ~s, ~s: ~s (~s; ~s)",
                                             [inet:ntoa(Ip), Ports, inet:format_error(Reason),
                                              ip_source(Ip, Config),
                                              port_source(First, Last, Config)]))}};
        Error ->
            Error
    end.

ip_source(Ip, Config) ->
    case maps:get(listen_ip, Config) of
        {0, 0, 0, 0} when Ip =:= {0, 0, 0, 0} -> "every local address";
        {0, 0, 0, 0} -> "address from kernel's inet_dist_use_interface or inet_dist_listen_options";
        _ -> "address from the listen_ip option"
    end.

port_source(0, 0, _Config) ->
    "port chosen by the kernel";
port_source(First, First, Config) ->
    case {maps:get(listen_port, Config), init:get_argument(ktls_filter_port)} of
        {First, {ok, _}} -> "port from -ktls_filter_port";
        {First, error} -> "port from the listen_port option";
        _ ->
            case kernel_port_range() of
                {First, First} -> "port from kernel's inet_dist_listen_min and max";
                _ -> "port from the epmd module's listen_port_please"
            end
    end;
port_source(_, _, _Config) ->
    "ports from kernel's inet_dist_listen_min and inet_dist_listen_max".

do_listen(_Ip, First, Last, _Backlog) when First > Last ->
    {error, eaddrinuse};
do_listen(Ip, First, Last, Backlog) ->
    case ktls_filter_nif:listen(Ip, First, Backlog) of
        {error, eaddrinuse} -> do_listen(Ip, First + 1, Last, Backlog);
        Other -> Other
    end.

register_node(Name, Port) ->
    Epmd = net_kernel:epmd_module(),
    _ = code:ensure_loaded(Epmd),
    case erlang:function_exported(Epmd, register_node, 3) of
        true -> Epmd:register_node(Name, Port, ?EPMD_DRIVER);
        false -> Epmd:register_node(Name, Port)
    end.

-spec close(term()) -> ok.
close(Listener) ->
    ktls_filter_nif:close_listener(Listener).

%% ------------------------------------------------------------------
%% Accepting
%% ------------------------------------------------------------------

-spec accept(term()) -> pid().
accept(Listener) ->
    spawn_opt(?MODULE, accept_loop, [self(), Listener], [link, {priority, max}]).

-spec accept_loop(pid(), term()) -> no_return().
accept_loop(Kernel, Listener) ->
    ok = ktls_filter_nif:accept(Listener),
    receive
        {ktls_accept, Listener, {ok, Conn}} ->
            _ = apply_env_options(Conn, inet_dist_listen_options),
            Ctrl = ktls_filter_dist_ctrl:start(Conn),
            ok = handover(Conn, Ctrl),
            Kernel ! {accept, self(), Ctrl, ?FAMILY, ?PROTOCOL},
            receive
                {Kernel, controller, SupPid} ->
                    ok = ktls_filter_dist_ctrl:supervisor(Ctrl, SupPid),
                    SupPid ! {self(), controller, Conn};
                {Kernel, unsupported_protocol} ->
                    exit(unsupported_protocol)
            end,
            accept_loop(Kernel, Listener);
        {ktls_accept, Listener, {error, closed}} ->
            exit(normal);
        {ktls_accept, Listener, {error, Reason}} ->
            %% EMFILE and friends: log, back off a little, keep accepting.
            error_logger:warning_msg("ktls_filter: accept failed: ~tp~n", [Reason]),
            receive after 100 -> ok end,
            accept_loop(Kernel, Listener)
    end.

handover(Conn, Ctrl) ->
    case ktls_filter_nif:controlling_process(Conn, Ctrl) of
        ok -> ok;
        {error, closed} -> ok  % the controller sees ktls_closed
    end.

-spec accept_connection(pid(), pid(), node(), list(), non_neg_integer()) -> pid().
accept_connection(AcceptPid, Ctrl, MyNode, Allowed, SetupTime) ->
    spawn_opt(?MODULE, do_accept, [self(), AcceptPid, Ctrl, MyNode, Allowed, SetupTime],
              dist_util:net_ticker_spawn_options()).

-spec do_accept(pid(), pid(), pid(), node(), list(), non_neg_integer()) -> no_return().
do_accept(Kernel, AcceptPid, Ctrl, MyNode, Allowed, SetupTime) ->
    receive
        {AcceptPid, controller, Conn} ->
            Timer = dist_util:start_timer(SetupTime),
            HSData0 = bind_name_on_accept(Conn, hs_data(Ctrl, Conn)),
            HSData = HSData0#hs_data{kernel_pid = Kernel,
                                     this_node = MyNode,
                                     timer = Timer,
                                     this_flags = 0,
                                     allowed = Allowed},
            dist_util:handshake_other_started(HSData)
    end.

%% ------------------------------------------------------------------
%% Connecting
%% ------------------------------------------------------------------

-spec setup(node(), term(), node(), longnames | shortnames, non_neg_integer()) -> pid().
setup(Node, Type, MyNode, LongOrShortNames, SetupTime) ->
    spawn_opt(?MODULE, do_setup, [self(), Node, Type, MyNode, LongOrShortNames, SetupTime],
              dist_util:net_ticker_spawn_options()).

-spec do_setup(pid(), node(), term(), node(), longnames | shortnames, non_neg_integer()) ->
          no_return().
do_setup(Kernel, Node, Type, MyNode, LongOrShortNames, SetupTime) ->
    [Name, Host] = splitnode(Node, LongOrShortNames),
    Timer = dist_util:start_timer(SetupTime),
    ok = start_carrier_or_shutdown(Node),
    Hello = tls_hello(Node),
    case resolve(Name, Host) of
        {ok, Ip, Port, Version} ->
            dist_util:reset_timer(Timer),
            Timeout = ktls_filter_config:get(connect_timeout),
            case connect(Ip, Port, Timeout, Node, Hello) of
                {ok, Conn} ->
                    _ = apply_env_options(Conn, inet_dist_connect_options),
                    ok = bind_name_on_connect(Conn, Node),
                    Ctrl = ktls_filter_dist_ctrl:start(Conn),
                    ok = handover(Conn, Ctrl),
                    ok = ktls_filter_dist_ctrl:supervisor(Ctrl, self()),
                    HSData0 = hs_data(Ctrl, Conn),
                    HSData = HSData0#hs_data{kernel_pid = Kernel,
                                             other_node = Node,
                                             this_node = MyNode,
                                             timer = Timer,
                                             this_flags = 0,
                                             other_version = Version,
                                             request_type = Type},
                    dist_util:handshake_we_started(HSData);
                {error, Reason} when is_binary(Reason) ->
                    %% TLS: the handshake failed (certificate, protocol...).
                    error_logger:warning_msg("ktls_filter: connect to ~tp (~s:~w) failed: ~ts~n",
                                             [Node, inet:ntoa(Ip), Port, Reason]),
                    ?shutdown2(Node, {connect_failed, Reason});
                {error, Reason} ->
                    error_logger:info_msg("ktls_filter: connect to ~tp (~s:~w) failed: ~tp~n",
                                          [Node, inet:ntoa(Ip), Port, Reason]),
                    ?shutdown2(Node, {connect_failed, Reason})
            end;
        {error, Reason} ->
            ?shutdown2(Node, {address_lookup_failed, Reason})
    end.

start_carrier_or_shutdown(Node) ->
    case start_carrier() of
        ok -> ok;
        {error, Reason} -> ?shutdown2(Node, Reason)
    end.

resolve(Name, Host) ->
    case address_please(Name, Host) of
        {ok, Ip, Port, Version} ->
            {ok, Ip, Port, Version};
        {ok, Ip} ->
            case (net_kernel:epmd_module()):port_please(Name, Ip) of
                {port, Port, Version} -> {ok, Ip, Port, Version};
                Other -> {error, {port_please, Other}}
            end;
        Other ->
            {error, Other}
    end.

%% With TLS, the ClientHello: the one the carrier made ahead when the last
%% connection to Node ended, else made (a key share, about 0.15 ms) by
%% another process while this one asks epmd for the port; the session
%% ticket of the last connection to Node is offered.
tls_hello(Node) ->
    case ktls_filter_config:get(tls) of
        undefined ->
            none;
        _ ->
            Key = atom_to_binary(Node),
            case ktls_filter_nif:tls_prepared_hello(Key) of
                {ok, Hello} ->
                    {made, Hello};
                _ ->
                    Self = self(),
                    spawn_monitor(fun() -> Self ! {self(), ktls_filter_nif:tls_hello(Key)} end)
            end
    end.

connect(Ip, Port, Timeout, Node, Making) ->
    Hello = case Making of
                none ->
                    none;
                {made, H} ->
                    H;
                {Pid, Ref} ->
                    receive
                        {Pid, {ok, H}} -> erlang:demonitor(Ref, [flush]), H;
                        {Pid, _} -> erlang:demonitor(Ref, [flush]), none;
                        {'DOWN', Ref, process, Pid, _} -> none
                    end
            end,
    case ktls_filter_nif:connect(Ip, Port, Timeout, atom_to_binary(Node), Hello) of
        {ok, Conn} ->
            receive
                {ktls_connected, Conn, ok} ->
                    {ok, Conn};
                {ktls_connected, Conn, {error, _} = Error} ->
                    Error
            end;
        Error ->
            Error
    end.

%% ------------------------------------------------------------------
%% verify_node_name: the peer's certificate must name its host
%% ------------------------------------------------------------------

%% We connect: the node we asked for is known before the dist handshake.
%% Without verify_node_name the client still checks the server's
%% certificate against the node's host, as ssl's client (and so
%% inet_tls_dist) does, unless the client options turn that off.
bind_name_on_connect(Conn, Node) ->
    Check = case ktls_filter_config:get(verify_node_name) of
                true ->
                    ktls_filter_tls:check_node_name(Conn, Node);
                false ->
                    case ktls_filter_tls:client_host_check(Node) of
                        none -> ok;
                        Host -> ktls_filter_tls:check_host(
                                  Conn, Node, Host,
                                  "the client's host name check, as ssl's; "
                                  "{server_name_indication, disable} in the client options "
                                  "turns it off")
                    end
            end,
    case Check of
        ok ->
            ok;
        {error, Why} ->
            %% No controller yet: this is the connection's one line.
            ok = ktls_filter_dist_ctrl:log_refusal(Conn, Why),
            ?shutdown2(Node, {tls_node_name, list_to_binary(Why)})
    end.

%% We accept: the peer names itself in its first handshake packet, checked
%% before dist_util sees it.
bind_name_on_accept(Conn, #hs_data{socket = Ctrl, f_recv = Recv} = HSData) ->
    case ktls_filter_config:get(verify_node_name) of
        true ->
            HSData#hs_data{f_recv = fun(C, Len, Timeout) ->
                                            checked_name(Ctrl, Conn, Recv(C, Len, Timeout))
                                    end};
        false ->
            HSData
    end.

checked_name(Ctrl, Conn, {ok, Packet} = Got) ->
    case get(ktls_name_checked) of
        true ->
            Got;
        undefined ->
            put(ktls_name_checked, true),
            Name = ktls_filter_tls:name_in_packet(Packet),
            case Name =/= undefined andalso ktls_filter_tls:check_node_name(Conn, Name) of
                ok ->
                    Got;
                false ->
                    %% The controller logs it: its own line for the close
                    %% that follows is then left out.
                    ok = ktls_filter_dist_ctrl:refuse(Ctrl, Conn,
                                                      "the first handshake packet names no node"),
                    {error, tls_node_name};
                {error, Why} ->
                    ok = ktls_filter_dist_ctrl:refuse(Ctrl, Conn, Why),
                    {error, tls_node_name}
            end
    end;
checked_name(_Ctrl, _Conn, Other) ->
    Other.

%% ------------------------------------------------------------------
%% Handshake data shared by both sides
%% ------------------------------------------------------------------

hs_data(Ctrl, Conn) ->
    #hs_data{socket = Ctrl,
             f_send = fun(C, Data) when C =:= Ctrl -> ktls_filter_nif:send_packet(Conn, Data) end,
             f_recv = fun(C, _Length, Timeout) when C =:= Ctrl -> recv_packet(Conn, Timeout) end,
             f_setopts_pre_nodeup =
                 fun(C) when C =:= Ctrl -> ok_or_closed(ktls_filter_nif:set_dist_framing(Conn)) end,
             f_setopts_post_nodeup = fun(C) when C =:= Ctrl -> ok end,
             f_getll = fun(C) when C =:= Ctrl -> {ok, Ctrl} end,
             f_address = fun(C, Node) when C =:= Ctrl -> remote_address(Conn, Node) end,
             f_handshake_complete =
                 fun(C, Node, DHandle) when C =:= Ctrl ->
                         ktls_filter_dist_ctrl:handshake_complete(Ctrl, Node, DHandle)
                 end,
             mf_tick = fun(C) when C =:= Ctrl -> ktls_filter_nif:send_tick(Conn) end,
             mf_getstat = fun(C) when C =:= Ctrl -> ktls_filter_nif:stats(Conn) end,
             mf_setopts = fun(C, Opts) when C =:= Ctrl -> conn_setopts(Conn, Opts) end,
             mf_getopts = fun(C, Opts) when C =:= Ctrl -> conn_getopts(Conn, Opts) end}.

ok_or_closed(ok) -> ok;
ok_or_closed({error, _} = E) -> E.

recv_packet(Conn, Timeout) ->
    case ktls_filter_nif:recv_packet(Conn) of
        ok ->
            receive
                {ktls_packet, Conn, Bin} ->
                    {ok, binary_to_list(Bin)};
                {ktls_closed, Conn, _Reason} ->
                    {error, closed}
            after Timeout ->
                    {error, timeout}
            end;
        Error ->
            Error
    end.

remote_address(Conn, Node) ->
    case ktls_filter_nif:peername(Conn) of
        {ok, Address} ->
            case dist_util:split_node(Node) of
                {node, _, Host} ->
                    #net_address{address = Address, host = Host,
                                 protocol = ?PROTOCOL, family = ?FAMILY};
                _ ->
                    ?shutdown(no_node)
            end;
        {error, _} ->
            ?shutdown(no_node)
    end.

%% ------------------------------------------------------------------
%% Options on a live connection (net_kernel:setopts/getopts)
%% ------------------------------------------------------------------

%% Socket options a dist connection takes, as inet_tcp_dist's (Linux
%% setsockopt levels and names); active, packet and deliver belong to the
%% carrier, as in inet_tcp_dist.
sockopt(nodelay) -> {6, 1, boolean};      % IPPROTO_TCP, TCP_NODELAY
sockopt(priority) -> {1, 12, integer};    % SOL_SOCKET, SO_PRIORITY
sockopt(tos) -> {0, 1, integer};          % IPPROTO_IP, IP_TOS
sockopt(sndbuf) -> {1, 7, integer};       % SOL_SOCKET, SO_SNDBUF
sockopt(recbuf) -> {1, 8, integer};       % SOL_SOCKET, SO_RCVBUF
sockopt(keepalive) -> {1, 9, boolean};    % SOL_SOCKET, SO_KEEPALIVE
sockopt(_) -> undefined.

%% net_kernel:setopts(new, Opts) calls this with the listener: the options
%% are checked here; net_kernel then stores them in inet_dist_listen_options
%% and inet_dist_connect_options, which every later connection gets.
-spec setopts(term(), list()) -> ok | {error, term()}.
setopts(_Listener, Opts) ->
    case bad_opts(Opts) of
        [] -> ok;
        Bad -> {error, {badopts, Bad}}
    end.

-spec getopts(term(), list()) -> {ok, list()} | {error, term()}.
getopts(_Listener, _Opts) ->
    {error, enotsup}.

bad_opts(Opts) ->
    [O || O <- Opts, not valid_opt(O)].

valid_opt({K, V}) ->
    case sockopt(K) of
        {_, _, boolean} -> is_boolean(V);
        {_, _, integer} -> is_integer(V) andalso V >= 0;
        undefined -> false
    end;
valid_opt(_) ->
    false.

%% net_kernel:setopts(Node, Opts) on a live connection.
conn_setopts(Conn, Opts) ->
    case bad_opts(Opts) of
        [] -> set_all(Conn, Opts);
        Bad -> {error, {badopts, Bad}}
    end.

set_all(_Conn, []) ->
    ok;
set_all(Conn, [{K, V} | T]) ->
    {Level, Name, _} = sockopt(K),
    Int = case V of true -> 1; false -> 0; I -> I end,
    case ktls_filter_nif:setsockopt(Conn, Level, Name, Int) of
        ok -> set_all(Conn, T);
        {error, _} = E -> E
    end.

%% net_kernel:getopts(Node, Opts).
conn_getopts(Conn, Opts) ->
    try
        {ok, [{K, get_one(Conn, K)} || K <- Opts]}
    catch
        throw:Error -> Error
    end.

get_one(Conn, K) ->
    case sockopt(K) of
        {Level, Name, Type} ->
            case ktls_filter_nif:getsockopt(Conn, Level, Name) of
                {ok, I} when Type =:= boolean -> I =/= 0;
                {ok, I} -> I;
                {error, _} = E -> throw(E)
            end;
        undefined ->
            throw({error, {badopts, [K]}})
    end.

%% The kernel parameters inet_dist_listen_options / inet_dist_connect_options
%% (and what net_kernel:setopts(new, ...) put there): the socket options are
%% set on the connection; options that only make sense for a gen_tcp socket
%% of inet_tcp_dist are skipped with a warning naming them.
apply_env_options(Conn, Param) ->
    Opts = case application:get_env(kernel, Param) of
               {ok, L} when is_list(L) -> L;
               _ -> []
           end,
    Sock = [O || O <- Opts, valid_opt(O)],
    case [O || O <- Opts, not valid_opt(O), not handled_elsewhere(Param, O)] of
        [] -> ok;
        Skipped -> warn_once({Param, Skipped},
                             "ktls_filter: kernel ~s: ~tp not supported by ktls_filter, skipped",
                             [Param, Skipped])
    end,
    set_all(Conn, Sock).

%% {ip, Ip} and backlog of inet_dist_listen_options are read by listen/2.
handled_elsewhere(inet_dist_listen_options, {ip, _}) -> true;
handled_elsewhere(inet_dist_listen_options, {backlog, _}) -> true;
handled_elsewhere(_, _) -> false.

warn_once(Key, Fmt, Args) ->
    case persistent_term:get({?MODULE, warned, Key}, false) of
        true -> ok;
        false ->
            persistent_term:put({?MODULE, warned, Key}, true),
            error_logger:warning_msg(Fmt ++ "~n", Args)
    end.

%% ------------------------------------------------------------------
%% Helpers for names and the epmd module
%% ------------------------------------------------------------------

splitnode(Node, LongOrShortNames) ->
    case dist_util:split_node(Node) of
        {node, Name, Host} ->
            case {LongOrShortNames, lists:member($., Host), inet:parse_address(Host)} of
                {longnames, false, {error, _}} ->
                    error_logger:error_msg("** System running to use fully qualified hostnames **~n"
                                           "** Hostname ~ts is illegal **~n", [Host]),
                    ?shutdown(Node);
                {shortnames, true, {error, _}} ->
                    error_logger:error_msg("** System NOT running to use fully qualified "
                                           "hostnames **~n** Hostname ~ts is illegal **~n",
                                           [Host]),
                    ?shutdown(Node);
                _ ->
                    [Name, Host]
            end;
        _ ->
            error_logger:error_msg("** Nodename ~p illegal **~n", [Node]),
            ?shutdown(Node)
    end.

%% The epmd module's address_please/3. erl_epmd's is inet:getaddr/2, done
%% here without the resolver's round trip when the host is an address
%% (net_kernel asks select/1 and then setup/5 for every connection).
address_please(Name, Host) ->
    case net_kernel:epmd_module() of
        erl_epmd -> ktls_filter_epmd:getaddr(Host, ?FAMILY);
        _ -> call_epmd(address_please, [Name, Host, ?FAMILY])
    end.

call_epmd(Fun, Args) ->
    Mod = net_kernel:epmd_module(),
    _ = code:ensure_loaded(Mod),
    case erlang:function_exported(Mod, Fun, length(Args)) of
        true -> apply(Mod, Fun, Args);
        false -> apply(erl_epmd, Fun, Args)
    end.
