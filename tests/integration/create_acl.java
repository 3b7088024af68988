// Creates one ALLOW ACL through Kafka's Java admin client, for resource types and operations
// librdkafka (confluent-kafka) cannot name. Used by test_kafka_tenant_acls.py; run as a
// single-file source program: java -cp '<kafka jars>/*' create_acl.java CONFIG PRINCIPAL TYPE NAME
import java.io.FileInputStream;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class create_acl {
    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        try (FileInputStream in = new FileInputStream(args[0])) {
            config.load(in);
        }
        try (Admin admin = Admin.create(config)) {
            AclBinding binding = new AclBinding(
                new ResourcePattern(ResourceType.valueOf(args[2]), args[3], PatternType.LITERAL),
                new AccessControlEntry(args[1], "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW));
            admin.createAcls(List.of(binding)).all().get();
        }
    }
}
