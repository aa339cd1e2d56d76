%% @doc Public API of ktls_filter: configuration at run time and statistics.
-module(ktls_filter).

-export([config_get/0, config_set/2, carrier_stats/0, connections/0,
         connection_info/1, options/0]).

%% @doc The configuration in force.
-spec config_get() -> ktls_filter_config:config().
config_get() ->
    ktls_filter_config:get().

%% @doc Changes one run-time option (filter options); validated like the
%% start-up options. Switching deep_packet_inspection is logged.
-spec config_set(atom(), term()) -> ok | {error, string()}.
config_set(Key, Value) ->
    case ktls_filter_config:set({Key, Value}, fun ktls_filter_nif:filter_configure/1) of
        {ok, Old, New} ->
            logger:notice("ktls_filter: ~p set to ~tp (was ~tp)", [Key, New, Old]),
            ok;
        Error ->
            Error
    end.

%% @doc Carrier-wide counters: connections, ring, buffer pool.
-spec carrier_stats() -> map().
carrier_stats() ->
    ktls_filter_nif:carrier_stats().

%% @doc Open ktls_filter connections as {Node, ConnectionInfo}.
-spec connections() -> [map()].
connections() ->
    [ktls_filter_nif:info(C) || C <- ktls_filter_nif:channel_list()].

-spec connection_info(ktls_filter_nif:conn()) -> map().
connection_info(C) ->
    ktls_filter_nif:info(C).

%% @doc The documented options and their defaults.
-spec options() -> ok.
options() ->
    io:put_chars(ktls_filter_config:describe()).
