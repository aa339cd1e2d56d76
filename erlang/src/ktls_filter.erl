%% @doc Public API of ktls_filter: configuration at run time and statistics.
-module(ktls_filter).

-export([config_get/0, config_set/2, carrier_stats/0, connections/0,
         connection_info/1, socket/1, getstat/1, getstat/2, options/0]).
-export([world_stats_get/0, channel_list/0, channel_inspect/1,
         logger_list/0, logger_inspect/1, logger_set_capacity/1]).

%% @doc The configuration in force.
-spec config_get() -> ktls_filter_config:config().
config_get() ->
    ktls_filter_config:get().

%% @doc Changes one run-time option (filter options); validated like the
%% start-up options. Switching deep_packet_inspection is logged.
-spec config_set(atom(), term()) -> ok | {error, string()}.
config_set(Key, Value) ->
    Apply = fun(C) -> ktls_filter_nif:filter_configure(ktls_filter_config:filter_options(C)) end,
    case ktls_filter_config:set({Key, Value}, Apply) of
        {ok, Old, New} ->
            %% Roles looked up under the old list may be wrong now.
            lists:member(Key, [system_applications, unprotected_applications]) andalso
                ktls_filter_nif:forget_roles(),
            logger:notice("ktls_filter: ~p set to ~tp (was ~tp)", [Key, New, Old]),
            ok;
        Error ->
            Error
    end.

%% @doc Carrier-wide counters: connections, ring, buffer pool, and TLS:
%% handshakes, handshake failures by reason, kTLS installs and fallbacks
%% (with the last reason), refusals by verify_node_name.
-spec carrier_stats() -> map().
carrier_stats() ->
    (ktls_filter_nif:carrier_stats())#{tls_node_name_refusals => ktls_filter_tls:refusals()}.

%% @doc Open ktls_filter connections as {Node, ConnectionInfo}.
-spec connections() -> [map()].
connections() ->
    [ktls_filter_nif:info(C) || C <- ktls_filter_nif:channel_list()].

%% A connection of this carrier: a node name, the node's dist controller
%% (as erlang:system_info(dist_ctrl) lists it), the `id' in its info, or
%% the connection itself (as channel_list/0 gives it).
-type connection() :: node() | pid() | non_neg_integer() | ktls_filter_nif:conn().

%% @doc One connection's info: id, peer and local address, open, stats and
%% tls (as in connections/0).
-spec connection_info(connection()) -> map() | {error, not_found}.
connection_info(Key) ->
    case find(Key) of
        {ok, C} -> ktls_filter_nif:info(C);
        error -> {error, not_found}
    end.

%% @doc The connection as a socket of OTP's inet module, for
%% inet:getstat/1,2, peername/1, sockname/1, port/1, getopts/2 and setopts/2
%% (ktls_filter's dist controller is a process, which inet does not take;
%% see ktls_filter_socket).
-spec socket(connection()) -> {ok, ktls_filter_socket:socket()} | {error, not_found}.
socket(Key) ->
    case find(Key) of
        {ok, C} -> {ok, ktls_filter_socket:new(C)};
        error -> {error, not_found}
    end.

%% @doc inet:getstat/1 of the connection: the statistics the carrier keeps.
-spec getstat(connection()) -> {ok, [{atom(), non_neg_integer()}]} | {error, term()}.
getstat(Key) ->
    getstat(Key, inet:stats()).

%% @doc inet:getstat/2 of the connection.
-spec getstat(connection(), [atom()]) -> {ok, [{atom(), non_neg_integer()}]} | {error, term()}.
getstat(Key, What) ->
    case socket(Key) of
        {ok, S} -> inet:getstat(S, What);
        Error -> Error
    end.

find(Node) when is_atom(Node) ->
    first([C || {N, C} <- channel_list(), N =:= Node]);
find(Ctrl) when is_pid(Ctrl) ->
    case lists:keyfind(Ctrl, 2, erlang:system_info(dist_ctrl)) of
        {Node, Ctrl} -> find(Node);
        false -> error
    end;
find(Id) when is_integer(Id) ->
    first([C || C <- ktls_filter_nif:channel_list(),
                maps:get(id, ktls_filter_nif:info(C)) =:= Id]);
find(Conn) ->
    try ktls_filter_nif:info(Conn) of
        _ -> {ok, Conn}
    catch
        error:badarg -> error
    end.

first([C | _]) -> {ok, C};
first([]) -> error.

%% @doc The documented options and their defaults.
-spec options() -> ok.
options() ->
    io:put_chars(ktls_filter_config:describe()).

%% @doc Node-wide filter counters: messages seen, kept and dropped (total and
%% per control message), fragments, refused spawn requests, errors, and how
%% often inspection and mode were switched, and connections trusted by
%% trusted_peers (`trusted_connections', `untrusted_connections').
-spec world_stats_get() -> map().
world_stats_get() ->
    maps:merge(ktls_filter_nif:world_stats(), ktls_filter_trust:counts()).

%% @doc Open dist channels of this carrier as {Node, Conn}; Node is
%% `undefined' while the handshake runs.
-spec channel_list() -> [{node() | undefined, ktls_filter_nif:conn()}].
channel_list() ->
    %% channel_node/1, not channel_inspect/1: one node name per connection,
    %% not its whole atom cache (finding one node among thousands of
    %% connections built every cache).
    [{N, C} || C <- ktls_filter_nif:channel_list(), {ok, N} <- [channel_node(C)]].

%% A connection that closed since channel_list/0 of the NIF is left out.
channel_node(C) ->
    try
        {ok, ktls_filter_nif:channel_node(C)}
    catch
        error:badarg -> closed
    end.

%% @doc One channel by node name or connection: peer address, framing flags,
%% the receiving atom cache, filter counters per control message, bytes and
%% fragments.
-spec channel_inspect(node() | ktls_filter_nif:conn()) -> map() | {error, not_found}.
channel_inspect(Node) when is_atom(Node) ->
    case find(Node) of
        {ok, C} -> ktls_filter_nif:channel_inspect(C);
        error -> {error, not_found}
    end;
channel_inspect(Conn) ->
    ktls_filter_nif:channel_inspect(Conn).

%% @doc Registered loggers (see ktls_filter_logger).
-spec logger_list() -> [map()].
logger_list() ->
    [ktls_filter_nif:logger_inspect(L) || L <- ktls_filter_nif:logger_list()].

%% @doc A logger by worker pid or handle: pending and dropped events.
%% An entry of logger_list/0 is inspected again by its pid.
-spec logger_inspect(pid() | map() | ktls_filter_nif:logger()) -> map() | {error, not_found}.
logger_inspect(#{pid := Pid}) when is_pid(Pid) ->
    logger_inspect(Pid);
logger_inspect(Pid) when is_pid(Pid) ->
    case [I || I = #{pid := P} <- logger_list(), P =:= Pid] of
        [I | _] -> I;
        [] -> {error, not_found}
    end;
logger_inspect(L) ->
    ktls_filter_nif:logger_inspect(L).

%% @doc Events a logger may have waiting before new ones are dropped (and
%% counted); 0 = unbounded.
-spec logger_set_capacity(non_neg_integer()) -> ok | {error, string()}.
logger_set_capacity(N) ->
    config_set(logger_capacity, N).
