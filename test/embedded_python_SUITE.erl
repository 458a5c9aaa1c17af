%% The embedded Python itself: that it is the one the NIF was built for (make
%% test runs every suite once per Python), that the C code uses only public
%% CPython API, and that python/erlang.pyi describes the real erlang module.
-module(embedded_python_SUITE).
-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-compile([export_all, nowarn_export_all]).

all() ->
    [runs_the_python_built_for, public_c_api_only, stubs_match_the_module].

init_per_suite(Config) ->
    erlpy_test:start(Config).

end_per_suite(Config) ->
    erlpy_test:stop(Config).

%% PYTHON (as c_src/Makefile reads it, default Debian's) is the interpreter
%% running: a NIF left over from another Python's build would fail here.
runs_the_python_built_for(_) ->
    Python = os:getenv("PYTHON", "/usr/bin/python3"),
    Expected = string:trim(os:cmd(Python ++ " -c 'import sys; print(sys.version)'")),
    {ok, Running} = py:eval(<<"__import__('sys').version">>),
    ct:comment("Python ~s", [erlpy_test:python_version()]),
    ?assertEqual(Expected, binary_to_list(Running)).

%% No _Py* names in c_src: private API moves or goes between Python versions
%% (3.13 removed _PyArg_CheckPositional and _PyLong_AsInt).  _PyBytes_Resize
%% is documented in the C API reference and has no public successor before
%% 3.15 (see c_src/buffer_type.c).
public_c_api_only(_) ->
    Dir = filename:join(filename:dirname(filename:dirname(erlpy_test:python_dir())), "c_src"),
    Files = filelib:wildcard(filename:join(Dir, "*.[ch]")),
    ?assert(length(Files) > 5),
    Allowed = [<<"_PyBytes_Resize">>],
    Found = lists:usort(
              [{filename:basename(F), Name}
               || F <- Files,
                  {ok, Src} <- [file:read_file(F)],
                  [Name] <- match_all(Src, <<"\\b_Py[A-Z][A-Za-z0-9_]*">>),
                  not lists:member(Name, Allowed)]),
    ?assertEqual([], Found).

match_all(Src, Re) ->
    case re:run(Src, Re, [global, {capture, all, binary}]) of
        {match, Ms} -> Ms;
        nomatch -> []
    end.

%% python/erlang.pyi names what the real module has, no more, no less, with
%% the same parameters (test/python/stub_check.py).
stubs_match_the_module(_) ->
    {ok, Path} = py:call(stub_check, stub_path, []),
    ?assert(filelib:is_regular(Path)),
    ?assertEqual({ok, []}, py:call(stub_check, check, [])).
