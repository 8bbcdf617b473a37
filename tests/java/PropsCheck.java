// Test-only helper: java.util.Properties.load(InputStream) on each input, for the Rust tests to compare.
// stdin: one input per line, as hex bytes. stdout: one line per input:
//   "OK" followed by " KEYHEX=VALUEHEX" per entry (keys sorted, UTF-8 hex of the Java strings), or
//   "ERR <exception class>" when load throws.
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;

public class PropsCheck {
    static byte[] unhex(String s) {
        byte[] b = new byte[s.length() / 2];
        for (int i = 0; i < b.length; i++) b[i] = (byte) Integer.parseInt(s.substring(2 * i, 2 * i + 2), 16);
        return b;
    }

    // UTF-8 of the string, with every unpaired surrogate as U+FFFD (what a Rust string can hold).
    static String hex(String s) {
        StringBuilder fixed = new StringBuilder();
        s.codePoints().forEach(cp -> fixed.appendCodePoint(Character.isSurrogate((char) cp) && cp < 0x10000 ? 0xFFFD : cp));
        StringBuilder sb = new StringBuilder();
        for (byte x : fixed.toString().getBytes(StandardCharsets.UTF_8)) sb.append(String.format("%02x", x & 0xff));
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), true, "US-ASCII");
        String line;
        while ((line = in.readLine()) != null) {
            Properties p = new Properties();
            try {
                p.load(new ByteArrayInputStream(unhex(line.trim())));
            } catch (Exception e) {
                out.println("ERR " + e.getClass().getName());
                continue;
            }
            StringBuilder sb = new StringBuilder("OK");
            for (String k : new TreeSet<>(p.stringPropertyNames())) {
                sb.append(' ').append(hex(k)).append('=').append(hex(p.getProperty(k)));
            }
            out.println(sb);
        }
    }
}
