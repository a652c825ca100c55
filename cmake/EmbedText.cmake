# EmbedText.cmake - writes OUT, a C header defining the bytes of the text
# file IN as "static const char NAME[]" (NUL-terminated), so that a binary
# carries its SQL and needs no install path to read it.  Run at build time:
#   cmake -DIN=file.sql -DOUT=file_sql.h -DNAME=c_name -P EmbedText.cmake
file(READ "${IN}" hex HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
# 12 bytes a line keeps the generated header readable
string(REPEAT "0x[0-9a-f][0-9a-f]," 12 line)
string(REGEX REPLACE "(${line})" "\\1\n\t" bytes "${bytes}")
get_filename_component(src "${IN}" NAME)
file(WRITE "${OUT}.tmp"
  "/* generated from ${src} by cmake/EmbedText.cmake: do not edit */\n"
  "static const char ${NAME}[] = {\n\t${bytes}0x00};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
