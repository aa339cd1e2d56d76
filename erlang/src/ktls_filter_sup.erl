%% @doc The supervisor of ktls_filter's node-wide processes. OTP's
%% distribution starts it under kernel's `net_sup', before net_kernel (the
%% proto_dist module's childspecs/0, as inet_tls_dist does with
%% ssl_dist_sup), so the carrier is up before the node listens or connects:
%% <ul>
%% <li>`ktls_filter_carrier': starts the carrier and applies the
%%     configuration once per node (ktls_filter_carrier);</li>
%% <li>`ktls_filter_rx_port_keeper': keeps the receive-port driver loaded
%%     (ktls_filter_rx_port).</li>
%% </ul>
%% Loggers (ktls_filter_logger) belong in the user's own supervision tree.
-module(ktls_filter_sup).
-behaviour(supervisor).

-export([start_link/0, child_spec/0]).
-export([init/1]).

%% @doc The child spec net_sup gets from ktls_filter_dist:childspecs/0.
-spec child_spec() -> supervisor:child_spec().
child_spec() ->
    #{id => ?MODULE, start => {?MODULE, start_link, []}, restart => permanent,
      shutdown => infinity, type => supervisor, modules => [?MODULE]}.

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    Carrier = #{id => ktls_filter_carrier, start => {ktls_filter_carrier, start_link, []},
                restart => permanent, shutdown => 2000, type => worker,
                modules => [ktls_filter_carrier]},
    Keeper = #{id => ktls_filter_rx_port_keeper, start => {ktls_filter_rx_port, start_link, []},
               restart => permanent, shutdown => 2000, type => worker,
               modules => [ktls_filter_rx_port]},
    %% The keeper first: the carrier's start asks it whether receive ports
    %% can be used.
    {ok, {#{strategy => one_for_one, intensity => 5, period => 10}, [Keeper, Carrier]}}.
