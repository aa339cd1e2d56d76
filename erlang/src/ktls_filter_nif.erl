%% @doc The NIF of ktls_filter: the io_uring carrier and the filter engine.
%%
%% Sockets live in the carrier (a C++ thread that owns an io_uring). Erlang
%% processes hold connection and listener resources; the carrier sends them
%% messages:
%%
%%   {ktls_accept, Listener, {ok, Conn} | {error, Reason}}   to the accept caller
%%   {ktls_connected, Conn, ok | {error, Reason}}            to the connect caller
%%   {ktls_packet, Conn, Binary}                             to the recv_packet caller
%%   {ktls_data, Conn, [Binary], Bytes}                      to the input handler
%%   {ktls_writable, Conn}                                   to the owner after `busy'
%%   {ktls_closed, Conn, Reason}                             to owner, input handler
%%                                                           and a pending recv_packet
%%
%% When the owner process dies the connection is closed.
-module(ktls_filter_nif).

-export([start/1, carrier_stats/0, priv_dir/0]).
-export([listen/3, accept/1, listener_address/1, close_listener/1]).
-export([connect/3, connect/5, tls_hello/1, tls_prepared_hello/1, controlling_process/2,
         watch_supervisor/2, recv_packet/1, send_packet/2,
         set_dist_framing/1, start_input/3, consumed/2, unconsumed/1, send_dist/2,
         send_tick/1, stats/1, info/1, peername/1, sockname/1, close/2,
         setsockopt/4, getsockopt/3]).
-export([filter_configure/1, option_table/0, world_stats/0, channel_list/0, channel_inspect/1,
         channel_node/1, filter_answer/4, refusal_log_slot/1, filter_decode/1, learn_role/2,
         forget_roles/0]).
-export([logger_open/1, logger_ack/2, logger_set_capacity/1, logger_list/0, logger_inspect/1]).

-on_load(load/0).

-type listener() :: reference().
-type conn() :: reference().
-type logger() :: reference().
-type hello() :: reference().
-export_type([listener/0, conn/0, logger/0, hello/0]).

-spec load() -> ok | {error, term()}.
load() ->
    erlang:load_nif(filename:join(priv_dir(), "ktls_filter_nif"), 0).

%% @doc Where the shared library is (NIF and receive-port driver in one file).
-spec priv_dir() -> file:filename().
priv_dir() ->
    case code:priv_dir(ktls_filter) of
        {error, bad_name} ->
            %% Loaded from an ebin that is not inside a lib dir.
            filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        P ->
            P
    end.

-define(NIF, erlang:nif_error({ktls_filter_nif_not_loaded, ?MODULE, ?LINE})).

%% @doc Starts the carrier thread with options (a map, see ktls_filter_config);
%% a second call returns ok without changing anything.
-spec start(map()) -> ok | {error, term()}.
start(_Options) -> ?NIF.

-spec carrier_stats() -> map().
carrier_stats() -> ?NIF.

%% @doc Binds and listens; Port 0 picks a free port.
-spec listen(inet:ip_address(), inet:port_number(), pos_integer()) ->
          {ok, listener()} | {error, term()}.
listen(_Ip, _Port, _Backlog) -> ?NIF.

%% @doc Requests one accept; the result arrives as a ktls_accept message.
-spec accept(listener()) -> ok | {error, closed}.
accept(_L) -> ?NIF.

-spec listener_address(listener()) -> {ok, {inet:ip_address(), inet:port_number()}}.
listener_address(_L) -> ?NIF.

-spec close_listener(listener()) -> ok.
close_listener(_L) -> ?NIF.

%% @doc Starts connecting; the caller becomes the owner and gets ktls_connected.
-spec connect(inet:ip_address(), inet:port_number(), non_neg_integer()) ->
          {ok, conn()} | {error, term()}.
connect(_Ip, _Port, _TimeoutMs) -> ?NIF.

%% @doc connect/3 whose TLS session tickets are kept under SessionKey (the
%% peer's node name) and whose ClientHello, when Hello is not none, was
%% made ahead by tls_hello/1 with the same key.
-spec connect(inet:ip_address(), inet:port_number(), non_neg_integer(), binary(),
              hello() | none) -> {ok, conn()} | {error, term()}.
connect(_Ip, _Port, _Timeout, _SessionKey, _Hello) -> ?NIF.

%% @doc A TLS client's ClientHello for a later connect/5 with the same
%% SessionKey, made now (a key share: made while the caller looks the
%% peer's address up); none without TLS. A dirty NIF.
-spec tls_hello(binary()) -> {ok, hello()} | none | {error, not_started}.
tls_hello(_SessionKey) -> ?NIF.

%% @doc The ClientHello the carrier made ahead for SessionKey (a peer whose
%% connection ended while its session ticket was kept), taken; none when
%% there is none. Makes nothing: a normal NIF, which never waits on its
%% scheduler; while the carrier thread is making that very hello (about
%% 0.15 ms) it goes on on a dirty I/O scheduler and waits for it there.
-spec tls_prepared_hello(binary()) -> {ok, hello()} | none | {error, not_started}.
tls_prepared_hello(_SessionKey) -> ?NIF.

%% @doc Makes Pid the owner (monitored: its death closes the connection).
-spec controlling_process(conn(), pid()) -> ok | {error, closed}.
controlling_process(_C, _Pid) -> ?NIF.

%% @doc The connection closes when Pid (dist_util's connection supervisor)
%% exits, as it does when the owner exits.
-spec watch_supervisor(conn(), pid()) -> ok.
watch_supervisor(_C, _Pid) -> ?NIF.

%% @doc Handshake mode: the next packet goes to the caller as ktls_packet.
-spec recv_packet(conn()) -> ok | {error, closed}.
recv_packet(_C) -> ?NIF.

%% @doc Sends one packet with the current framing's length header.
-spec send_packet(conn(), iodata()) -> ok | {error, closed}.
send_packet(_C, _Data) -> ?NIF.

%% @doc Switches to 4-byte dist framing (bytes already received included).
-spec set_dist_framing(conn()) -> ok | {error, closed}.
set_dist_framing(_C) -> ?NIF.

%% @doc From now on received packets go through the filter to Pid as
%% `{ktls_data, Conn, Items, Bytes}'. Items are binaries for the VM, in
%% order, `{ktls_ask, {Hint, Op, Control, Payload}, KeepBin, DropBin | none}'
%% for messages the handler decides, `{ktls_resolve, ...}' for receivers to
%% look up, `{ktls_refused, ...}' for a refusal to log, and, last,
%% `{ktls_log, [{LoggerPid, Message}]}': the batch's logger events, which
%% the input process sends (so that they keep their order). `rx => ring' (default): the carrier's
%% ring thread reads. `rx => port': a receive port reads (see
%% ktls_filter_rx_port); the result carries the token for its attach.
-spec start_input(conn(), pid(),
                  #{node := node(), local_node := node(), creation := non_neg_integer(),
                    rx => ring | port}) ->
          ok | {port, non_neg_integer()} | {error, closed}.
start_input(_C, _Pid, _Info) -> ?NIF.

%% @doc Bytes of ktls_data the input handler has passed on to the VM;
%% `resume' when a receive port paused at rx_window must read again.
-spec consumed(conn(), non_neg_integer()) -> ok | resume.
consumed(_C, _Bytes) -> ?NIF.

%% @doc Bytes of ktls_data sent to the input handler and not yet reported
%% by consumed/2 (also after the connection closed).
-spec unconsumed(conn()) -> non_neg_integer().
unconsumed(_C) -> ?NIF.

%% @doc Queues dist packets (each element one packet); `busy' means wait
%% for ktls_writable before sending more.
-spec send_dist(conn(), [iodata()]) -> ok | busy | {error, closed}.
send_dist(_C, _Packets) -> ?NIF.

-spec send_tick(conn()) -> ok.
send_tick(_C) -> ?NIF.

%% @doc {ok, RecvCnt, SendCnt, SendPend} as dist_util's getstat wants it.
-spec stats(conn()) -> {ok, non_neg_integer(), non_neg_integer(), non_neg_integer()} |
          {error, closed}.
stats(_C) -> ?NIF.

-spec info(conn()) -> map().
info(_C) -> ?NIF.

-spec peername(conn()) -> {ok, {inet:ip_address(), inet:port_number()}} | {error, term()}.
peername(_C) -> ?NIF.

-spec sockname(conn()) -> {ok, {inet:ip_address(), inet:port_number()}} | {error, term()}.
sockname(_C) -> ?NIF.

%% @doc An integer socket option (level, name as in setsockopt(2)).
-spec setsockopt(conn(), integer(), integer(), integer()) -> ok | {error, term()}.
setsockopt(_C, _Level, _Name, _Value) -> ?NIF.

-spec getsockopt(conn(), integer(), integer()) -> {ok, integer()} | {error, term()}.
getsockopt(_C, _Level, _Name) -> ?NIF.

%% @doc Closes; ktls_closed follows with Reason.
-spec close(conn(), term()) -> ok.
close(_C, _Reason) -> ?NIF.

%% @doc Sets filter configuration (mode, policy, limits); see ktls_filter.
-spec filter_configure(map()) -> ok | {error, term()}.
filter_configure(_Config) -> ?NIF.

%% @doc Every option the NIF reads (nif/options.cc), its group and the
%% default of the C++ structure it fills (`derived' for what
%% ktls_filter_config computes and for lists): the NIF takes every value
%% from the map ktls_filter_config makes, and a test checks that these
%% defaults match ktls_filter_config:options().
-spec option_table() -> [{atom(), carrier | filter, term()}].
option_table() -> ?NIF.

%% @doc Runs dist packets (one connection's stream, in order) through a
%% fresh filter channel under the policy in force: per packet
%% `{Action, Hint, Reason, ControlName, Control, Payload, Prefix, Bytes}'
%% (Bytes: what the VM would get), or a final `{close, Why}'. For tests.
-spec filter_decode([binary()]) -> [tuple()].
filter_decode(_Packets) -> ?NIF.

%% @doc Counts the handler's answer (Kept), or what became of a message
%% whose receiver was looked up (WouldDrop: kept only for monitor mode), for
%% a message of control op Op.
-spec filter_answer(conn(), non_neg_integer(), boolean(), boolean()) -> ok.
filter_answer(_C, _Op, _Kept, _WouldDrop) -> ?NIF.

%% @doc Whether a refusal on Conn may be logged now: at most one warning per
%% connection and second; `{ok, Held}' counts the refusals held back since
%% the last one.
-spec refusal_log_slot(conn()) -> {ok, non_neg_integer()} | held.
refusal_log_slot(_C) -> ?NIF.

%% @doc Records the role of a local process (ktls_filter_roles:role/1) in
%% the filter's node-wide cache; `gone' and `unknown' are not recorded.
-spec learn_role(pid(), ktls_filter_roles:role()) -> ok.
learn_role(_Pid, _Role) -> ?NIF.

%% @doc Empties the cache of roles (system_applications changed).
-spec forget_roles() -> ok.
forget_roles() -> ?NIF.

%% @doc Registers Pid as a logger: it gets `{ktls_logger_batch, Logger,
%% Dropped, Events}' and acknowledges each with logger_ack/2.
-spec logger_open(pid()) -> {ok, logger()} | {error, term()}.
logger_open(_Pid) -> ?NIF.

-spec logger_ack(logger(), non_neg_integer()) -> ok.
logger_ack(_L, _N) -> ?NIF.

-spec logger_set_capacity(non_neg_integer()) -> ok.
logger_set_capacity(_N) -> ?NIF.

-spec logger_list() -> [logger()].
logger_list() -> ?NIF.

-spec logger_inspect(logger()) -> map().
logger_inspect(_L) -> ?NIF.

-spec world_stats() -> map().
world_stats() -> ?NIF.

-spec channel_list() -> [conn()].
channel_list() -> ?NIF.

-spec channel_inspect(conn()) -> map().
channel_inspect(_C) -> ?NIF.

%% The peer's node name of a connection (undefined before the dist
%% handshake), as channel_inspect/1 has it, without building the rest.
-spec channel_node(conn()) -> node() | undefined.
channel_node(_C) -> ?NIF.
