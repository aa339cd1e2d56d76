%% @doc epmd-less name resolution for ktls_filter (`-epmd_module ktls_filter_epmd'
%% together with `-start_epmd false').
%%
%% Our own listen port comes from the `listen_port' option (or
%% `-ktls_filter_port P'); other nodes are found in the `peers' table
%% (`#{'name@host' => {Host, Port}}') or given on the command line as
%% `-ktls_filter_peer NAME@HOST PORT' (repeatable). A node found in neither
%% is looked up through a real epmd, if one answers.
-module(ktls_filter_epmd).

-export([start_link/0, register_node/2, register_node/3, listen_port_please/2,
         port_please/2, port_please/3, address_please/3, names/1]).
-export([getaddr/2]).

-define(DIST_VERSION, 6).

%% @doc Nothing to run: the table is configuration.
-spec start_link() -> ignore.
start_link() ->
    ignore.

-spec register_node(atom() | string(), inet:port_number()) -> {ok, pos_integer()}.
register_node(Name, Port) ->
    register_node(Name, Port, inet_tcp).

%% @doc No registration without epmd: a fresh creation (4..2^32-1) each time.
-spec register_node(atom() | string(), inet:port_number(), atom()) -> {ok, pos_integer()}.
register_node(_Name, _Port, _Driver) ->
    {ok, 3 + rand:uniform(16#fffffffc)}.

%% @doc The port to listen on: the listen_port option (or -ktls_filter_port,
%% which sets it), our own entry in the peers table, else 0 (any free port).
-spec listen_port_please(atom() | string(), string()) -> {ok, inet:port_number()}.
listen_port_please(Name, Host) ->
    case safe_config(listen_port, 0) of
        0 ->
            case lookup(node_name(Name, Host)) of
                {ok, _Host, Port} -> {ok, Port};
                error -> {ok, 0}
            end;
        Port ->
            {ok, Port}
    end.

-spec port_please(atom() | string(), term()) ->
          {port, inet:port_number(), pos_integer()} | noport.
port_please(Name, Ip) ->
    port_please(Name, Ip, infinity).

-spec port_please(atom() | string(), term(), timeout()) ->
          {port, inet:port_number(), pos_integer()} | noport.
port_please(Name, Ip, Timeout) ->
    case lookup_by_name(to_list(Name)) of
        {ok, _Host, Port} -> {port, Port, ?DIST_VERSION};
        error -> erl_epmd:port_please(Name, Ip, Timeout)
    end.

%% @doc Address and port in one step, so port_please is skipped.
-spec address_please(atom() | string(), string(), inet | inet6) ->
          {ok, inet:ip_address(), inet:port_number(), pos_integer()} |
          {ok, inet:ip_address()} | {error, term()}.
address_please(Name, Host, Family) ->
    case lookup(node_name(Name, Host)) of
        {ok, PeerHost, Port} ->
            case getaddr(PeerHost, Family) of
                {ok, Ip} -> {ok, Ip, Port, ?DIST_VERSION};
                Error -> Error
            end;
        error ->
            getaddr(Host, Family)  % erl_epmd:address_please/3's answer
    end.

%% @doc inet:getaddr/2, without the resolver's round trip (a quarter of a
%% millisecond with the native resolver) for a host that is an address
%% already (`app@10.0.0.5').
-spec getaddr(string(), inet | inet6) -> {ok, inet:ip_address()} | {error, term()}.
getaddr(Host, Family) ->
    case inet:parse_strict_address(Host) of
        {ok, Ip} when Family =:= inet, tuple_size(Ip) =:= 4 -> {ok, Ip};
        {ok, Ip} when Family =:= inet6, tuple_size(Ip) =:= 8 -> {ok, Ip};
        _ -> inet:getaddr(Host, Family)
    end.

-spec names(term()) -> {ok, [{string(), inet:port_number()}]} | {error, term()}.
names(Host) ->
    Own = [{N, P} || {Node, {_, P}} <- maps:to_list(peers()),
                     {N, _} <- [split(atom_to_list(Node))]],
    case erl_epmd:names(Host) of
        {ok, Names} -> {ok, Own ++ Names};
        _ when Own =/= [] -> {ok, Own};
        Error -> Error
    end.

%% ------------------------------------------------------------------

lookup(Node) ->
    case maps:find(Node, peers()) of
        {ok, {Host, Port}} -> {ok, host_string(Host), Port};
        error -> error
    end.

lookup_by_name(Name) ->
    case [{H, P} || {Node, {H, P}} <- maps:to_list(peers()),
                    element(1, split(atom_to_list(Node))) =:= Name] of
        [{Host, Port} | _] -> {ok, host_string(Host), Port};
        [] -> error
    end.

%% The peers option merged with -ktls_filter_peer NODE PORT arguments
%% (checked when the carrier starts).
peers() ->
    FromArgs = try
                   ktls_filter_config:peer_arguments()
               catch
                   throw:{config, _} -> #{}
               end,
    maps:merge(safe_config(peers, #{}), FromArgs).

safe_config(Key, Default) ->
    try
        ktls_filter_config:get(Key)
    catch
        _:_ -> Default
    end.

node_name(Name, Host) ->
    list_to_atom(to_list(Name) ++ "@" ++ Host).

split(NodeStr) ->
    case string:split(NodeStr, "@") of
        [N, H] -> {N, H};
        [N] -> {N, ""}
    end.

host_string(H) when is_list(H) -> H;
host_string(H) when is_tuple(H) -> inet:ntoa(H).

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) when is_list(L) -> L.
