%% @private
%% @doc The NIF library: loaded once per VM, it starts the embedded Python
%% interpreter.  Use the `py' and `py_buffer' modules instead.
-module(py_nif).

-export([start/1, stop/0, submit/3, submit/5, cancel/1, info/0, set_forwarder/1,
         gate_new/2, gate_info/1]).
-export([buffer_new/1, buffer_write/2, buffer_close/1, buffer_abort/2, buffer_info/1,
         buffer_want_drain/2, buffer_cancel_drain/1, buffer_notify_read/2, buffer_take/3]).
-export([inbox_new/0, inbox_push/3]).

-on_load(load/0).

-type job() :: reference().
-type gate() :: reference().
-type buffer() :: reference().
-type inbox() :: reference().
-export_type([job/0, gate/0, buffer/0, inbox/0]).

-spec load() -> ok | {error, term()}.
load() ->
    Priv = priv_dir(),
    erlang:load_nif(filename:join(Priv, "erlpy_nif"),
                    #{python_path => [unicode:characters_to_binary(D) || D <- python_dirs(Priv)]}).

priv_dir() ->
    case code:priv_dir(erlpy) of
        {error, bad_name} -> filename:join(filename:dirname(filename:dirname(code:which(?MODULE))), "priv");
        Dir -> Dir
    end.

%% The Python half of erlpy: the build copies python/ into priv/python, so
%% that it ships with the application (releases carry priv/).
python_dirs(Priv) ->
    [filename:join(Priv, "python")].

-spec start(pos_integer()) -> ok | {error, enomem}.
start(_Contexts) -> erlang:nif_error(not_loaded).

-spec stop() -> ok.
stop() -> erlang:nif_error(not_loaded).

-spec submit(non_neg_integer(), reference(), tuple()) ->
          {ok, job()} | {error, not_started | no_context | enomem}.
submit(_Context, _Ref, _Request) -> erlang:nif_error(not_loaded).

-spec submit(non_neg_integer(), reference(), tuple(), gate(), first | next) ->
          {ok, job()} | {error, not_started | no_context | enomem | busy}.
submit(_Context, _Ref, _Request, _Gate, _Admit) -> erlang:nif_error(not_loaded).

-spec gate_new(pos_integer(), non_neg_integer()) -> gate() | {error, enomem}.
gate_new(_Cap, _MaxWaiting) -> erlang:nif_error(not_loaded).

-spec gate_info(gate()) -> #{holding := non_neg_integer(), waiting := non_neg_integer()}.
gate_info(_Gate) -> erlang:nif_error(not_loaded).

-spec cancel(job()) -> cancelled | done.
cancel(_Job) -> erlang:nif_error(not_loaded).

-spec info() -> #{contexts := non_neg_integer(), threads := non_neg_integer(),
                  busy := non_neg_integer(), queued := non_neg_integer()}.
info() -> erlang:nif_error(not_loaded).

%% Where Python's erlang.send sends for a pid of another node:
%% `{erlpy_forward, Pid, Msg}' to this process (py_nodes_server).
-spec set_forwarder(pid()) -> ok.
set_forwarder(_Pid) -> erlang:nif_error(not_loaded).

-spec buffer_new(map()) -> {ok, buffer()} | {error, enomem}.
buffer_new(_Opts) -> erlang:nif_error(not_loaded).

-spec buffer_write(buffer(), binary()) ->
          ok | wait | {wait, non_neg_integer()} | {error, closed | overflow | enomem}.
buffer_write(_Buf, _Data) -> erlang:nif_error(not_loaded).

-spec buffer_close(buffer()) -> ok | {error, closed}.
buffer_close(_Buf) -> erlang:nif_error(not_loaded).

-spec buffer_abort(buffer(), atom()) -> ok.
buffer_abort(_Buf, _Reason) -> erlang:nif_error(not_loaded).

-spec buffer_info(buffer()) -> map().
buffer_info(_Buf) -> erlang:nif_error(not_loaded).

-spec buffer_want_drain(buffer(), non_neg_integer()) -> ok | wait.
buffer_want_drain(_Buf, _Token) -> erlang:nif_error(not_loaded).

-spec buffer_cancel_drain(buffer()) -> ok | sent.
buffer_cancel_drain(_Buf) -> erlang:nif_error(not_loaded).

-spec buffer_notify_read(buffer(), non_neg_integer()) -> ok.
buffer_notify_read(_Buf, _Token) -> erlang:nif_error(not_loaded).

%% Reads a buffer from Erlang (a relay to a worker node): up to Max bytes,
%% or `wait' and `{py_buffer_readable, Token}' once there is more to take.
-spec buffer_take(buffer(), pos_integer(), non_neg_integer()) ->
          {ok, binary()} | eof | wait | {error, {aborted, atom()} | closed | busy}.
buffer_take(_Buf, _Max, _Token) -> erlang:nif_error(not_loaded).

%% An event loop's inbox (c_src/asgi_inbox.c): py_asgi pushes work into it.
-spec inbox_new() -> {ok, inbox()} | {error, enomem}.
inbox_new() -> erlang:nif_error(not_loaded).

-spec inbox_push(inbox(), term(), boolean()) -> ok | {error, closed}.
inbox_push(_Inbox, _Term, _Monitor) -> erlang:nif_error(not_loaded).
